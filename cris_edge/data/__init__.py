"""Datasets, numpy + OpenCV only (never torch): RefCOCO / RefCOCO+ / G-Ref in the refer format
(:mod:`.refer`), CRIS.pytorch's LMDB format (:mod:`.lmdb_store`, written by ``cris-prepare``)
and the seeded synthetic scenes (:mod:`.synthetic`). All yield records (image, mask,
sentences, see :mod:`.records`); :func:`.sources.open_records` opens any of them by name."""
