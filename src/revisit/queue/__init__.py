"""Queues between pipeline stages, behind :class:`revisit.queue.base.StageQueue`."""
