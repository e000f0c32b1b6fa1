"""Samplers of typical interpolators, and the SGD baseline, sharing one protocol (see ``samplers.base``)."""

from typicalnets.samplers.base import Sampler, SampleResult, SampleStream, StreamingSampler, iter_samples, sample
from typicalnets.samplers.gc import GCInfo, GCState, GuessAndCheck
from typicalnets.samplers.sgd import SGDInfo, SGDState, SGDTrainer, train_sgd
from typicalnets.samplers.smc import SequentialMonteCarlo, SMCInfo, SMCState, sample_smc

__all__ = [
    "GCInfo",
    "GCState",
    "GuessAndCheck",
    "SGDInfo",
    "SGDState",
    "SGDTrainer",
    "SMCInfo",
    "SMCState",
    "SampleResult",
    "SampleStream",
    "Sampler",
    "SequentialMonteCarlo",
    "StreamingSampler",
    "iter_samples",
    "sample",
    "sample_smc",
    "train_sgd",
]
