"""Footage jobs: one :class:`~reid.jobs.model.Job` with its states and pure transitions, two storage
backends that apply them (:mod:`~reid.jobs.sqlite_queue` in the data dir, :mod:`~reid.jobs.redis_queue`
for separate workers), and one runner (:mod:`~reid.jobs.runner`) that turns a claimed job into
embedded tracklets. The service decides where the tracklets go (docs/footage.md, docs/deploy.md)."""
