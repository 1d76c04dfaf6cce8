"""Tenants, API keys with roles, the camera registry, camera groups and the audit log.

Kept in their own ``tenancy_*`` tables inside the store's DuckDB file: DuckDB allows one
writer process per file, so the server shares the store's connection (see
:func:`revisit.tenancy.db.connection_for`).
"""

from revisit.tenancy.db import ROLES, ApiKey, Camera, Location, Tenancy, TenancyError, Tenant

__all__ = ["ROLES", "ApiKey", "Camera", "Location", "Tenancy", "TenancyError", "Tenant"]
