"""Tools beside the data path: ``bench`` (+ ``bench_timing``) times the engine against peers, ``doctor`` checks an
installation, ``report`` and ``export`` read a challenge's stored results."""
