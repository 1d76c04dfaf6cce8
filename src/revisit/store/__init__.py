"""Sighting store backends behind :class:`revisit.store.base.SightingStore`."""
