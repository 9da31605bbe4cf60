"""Experiments: comparisons, sweeps, ablations and the seed's study, over normal run folders."""
