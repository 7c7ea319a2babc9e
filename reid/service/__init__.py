"""The search service: ONNX Runtime inference, FAISS index + SQLite metadata, FastAPI."""
