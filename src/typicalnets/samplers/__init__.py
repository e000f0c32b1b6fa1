"""Samplers of typical interpolators, sharing one protocol (see ``samplers.base``)."""

from typicalnets.samplers.base import Sampler, SampleResult, sample
from typicalnets.samplers.gc import GCInfo, GCState, GuessAndCheck
from typicalnets.samplers.smc import SequentialMonteCarlo, SMCInfo, SMCState, sample_smc

__all__ = [
    "GCInfo",
    "GCState",
    "GuessAndCheck",
    "SMCInfo",
    "SMCState",
    "SampleResult",
    "Sampler",
    "SequentialMonteCarlo",
    "sample",
    "sample_smc",
]
