"""The deployable roles of an encrypted run, one module each: ``party`` (one hospital),
``dealer``, ``keyservice`` (K), ``evaluator`` (E) and ``coordinator``; ``local`` starts them
all on one machine (what ``train.py`` does for ``mode=hybrid``). Each is a command of
``python -m ppml_hybrid`` (see :mod:`ppml_hybrid.__main__`)."""
