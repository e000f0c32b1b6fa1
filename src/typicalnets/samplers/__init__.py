"""Samplers of typical interpolators, sharing one protocol (see ``samplers.base``)."""

from typicalnets.samplers.base import SampleResult, Sampler, clopper_pearson, sample
from typicalnets.samplers.gc import GCInfo, GCState, GuessAndCheck

__all__ = ["GCInfo", "GCState", "GuessAndCheck", "SampleResult", "Sampler", "clopper_pearson", "sample"]
