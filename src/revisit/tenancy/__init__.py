"""Tenants, API keys with roles, the camera registry, camera groups and the audit log.

Kept in their own ``tenancy_*`` tables in the configured store's database, through the
store's transactions, so every process using one store shares them.
"""

from revisit.tenancy.db import (
    ROLES,
    ApiKey,
    Camera,
    Location,
    Tenancy,
    TenancyError,
    Tenant,
    open_tenancy,
)

__all__ = ["ROLES", "ApiKey", "Camera", "Location", "Tenancy", "TenancyError", "Tenant",
           "open_tenancy"]
