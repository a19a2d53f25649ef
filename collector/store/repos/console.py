"""The console's repositories (accounts, casework, pupils, queue, reports, roster, ...) as
one mixin, mixed into every backend's store class next to the core repositories.

The host class provides ``self.db`` (a :class:`~collector.store.sql.Db`) and the one audit
writer, ``audit()`` (:class:`~collector.store.repos.audit.AuditRepo`). Services group several
repository calls into one transaction with ``with store.atomic():``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from collector.store.repos.accounts import AccountsRepo
from collector.store.repos.audit_view import AuditViewRepo
from collector.store.repos.casework import CaseworkRepo
from collector.store.repos.notices import NoticesRepo
from collector.store.repos.pupils import PupilsRepo
from collector.store.repos.queue import QueueRepo
from collector.store.repos.reports import ReportsRepo
from collector.store.repos.roster import RosterRepo
from collector.store.sql import Db

__all__ = ["ConsoleRepos"]


class ConsoleRepos(AccountsRepo, CaseworkRepo, QueueRepo, ReportsRepo, RosterRepo,
                   NoticesRepo, AuditViewRepo, PupilsRepo):
    """Every console repository; needs ``self.db`` and ``audit()`` from its host."""

    db: Db

    def atomic(self) -> AbstractContextManager[Any]:
        """Group the repository calls made inside ``with`` into one transaction."""
        return self.db.transaction()  # type: ignore[no-any-return]

    if TYPE_CHECKING:  # provided by AuditRepo in the host store class
        def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
                  detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None: ...
