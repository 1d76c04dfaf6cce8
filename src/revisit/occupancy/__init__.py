"""Occupancy: people per snapshot, zones, locations\x27 capacity, the door sign, alerts."""
