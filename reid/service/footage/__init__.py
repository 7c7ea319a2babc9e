"""Footage ingestion: decode → detect → track → tracklets → embed (docs/footage.md).

Torch-free like the rest of ``service``. Entry point: :func:`reid.service.footage.pipeline.process_footage`.
"""
