"""Who is calling: the subject, tenant and role carried by a verified token."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    """Roles in increasing power; each includes every lower one."""

    viewer = 1  # read its tenant's resources
    submitter = 2  # plus submit and cancel jobs and runs, save DAGs
    operator = 3  # plus retry, the DLQ, queues and schedules
    admin = 4  # everything, in every tenant; shell tasks


@dataclass(frozen=True)
class Principal:
    """The caller, as established from its token."""

    subject: str
    tenant: str
    role: Role | None  # the highest role the token names; None when it names none

    def allows(self, role: Role) -> bool:
        return self.role is not None and self.role >= role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    @property
    def scope(self) -> str | None:
        """The tenant every read is limited to; None (all tenants) for admins."""
        return None if self.is_admin else self.tenant


def highest_role(names: object) -> Role | None:
    """The most powerful known role among `names` (a token's `roles` claim)."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        return None
    roles = [Role[name] for name in names if isinstance(name, str) and name in Role.__members__]
    return max(roles, default=None)
