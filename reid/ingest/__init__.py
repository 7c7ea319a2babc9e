"""Footage ingestion: decode → detect → track → tracklets → embed (docs/footage.md).

Turns footage into tracklets and their vectors and knows nothing of the service or its storage (the
service turns results into gallery records: :mod:`reid.service.records`). Torch-free. Entry point:
:func:`reid.ingest.pipeline.process_footage`.
"""
