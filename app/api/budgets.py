"""Cost budgets: caps on what one request may hold, so a single request cannot take the model for minutes.

Every request is charged max_steps x trajectories "row-steps" (the batch rows it can hold times the ACT
steps it can hold them for) and may ask for a deadline of at most `max_deadline_ms`. Each cap comes from
the model's `limits:` in the models file, else from the server-wide default (RECURSOLVE_*_CAP). A request
may lower its own cost freely but never raise it over a cap: that is a 422 naming the cap, the value asked
for and where the cap is configured. A batch is charged the sum of its items (413, like too_many_items:
the remedy is the same, split the batch).

`check_budget` and `check_batch_budget` are pure; the service calls `check_budget` from resolve_options
(after the request's options are merged over the model's defaults), the batch route `check_batch_budget`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.api.schemas import SolveRequest
from app.settings import ModelLimits, Settings

if TYPE_CHECKING:
    from app.api.service import SolveService

# ModelLimits field -> the Settings field holding its server-wide default.
SERVER_FIELDS = {"max_steps": "max_steps_cap", "max_trajectories": "trajectories_cap",
                 "max_row_steps": "row_steps_cap", "max_deadline_ms": "deadline_ms_cap"}


class BudgetExceeded(ValueError):
    """A request (422) or a batch (413) over a cost cap; the message names the cap, the value and where it is set."""

    def __init__(self, message: str, location: str, status: int = 422, code: str = "over_budget") -> None:
        self.message, self.location, self.status, self.code = message, location, status, code
        super().__init__(message)


class CostedOptions(Protocol):
    """What the check reads from resolved options (app.engine.protocol.SolveOptions has these)."""

    max_steps: int
    trajectories: int
    deadline_ms: int | None


@dataclass(frozen=True)
class Cap:
    value: int
    where: str  # how an operator changes it, e.g. "RECURSOLVE_MAX_STEPS_CAP"


@dataclass(frozen=True)
class Budget:
    """The caps in force for one model."""

    max_steps: Cap
    max_trajectories: Cap
    max_row_steps: Cap
    max_deadline_ms: Cap


def server_limits(settings: Settings | None = None) -> ModelLimits:
    """The server-wide caps (every field set) from settings, or from the Settings defaults."""
    def value(name: str) -> int:
        return getattr(settings, name) if settings is not None else Settings.model_fields[name].default
    return ModelLimits(**{field: value(name) for field, name in SERVER_FIELDS.items()})


def budget_for(model_name: str, model_limits: ModelLimits, server: ModelLimits) -> Budget:
    """Each cap from the model's limits when it sets one, else the server's."""
    caps: dict[str, Cap] = {}
    for field, setting in SERVER_FIELDS.items():
        own = getattr(model_limits, field)
        if own is not None:
            caps[field] = Cap(own, f"limits.{field} of model {model_name!r} in the models file")
        else:
            caps[field] = Cap(getattr(server, field), "RECURSOLVE_" + setting.upper())
    return Budget(**caps)


def check_budget(options: CostedOptions, budget: Budget) -> None:
    """Raise BudgetExceeded (422) when the resolved options ask for more than a cap allows."""
    b = budget
    if options.max_steps > b.max_steps.value:
        raise BudgetExceeded(f"max_steps={options.max_steps} is over this model's cap of {b.max_steps.value} ACT "
                             f"steps (set by {b.max_steps.where}); ask for at most {b.max_steps.value}",
                             "options.max_steps")
    if options.trajectories > b.max_trajectories.value:
        raise BudgetExceeded(f"trajectories={options.trajectories} is over this model's cap of "
                             f"{b.max_trajectories.value} (set by {b.max_trajectories.where}); ask for at most "
                             f"{b.max_trajectories.value}", "options.trajectories")
    row_steps = options.max_steps * options.trajectories
    if row_steps > b.max_row_steps.value:
        raise BudgetExceeded(f"max_steps x trajectories = {options.max_steps} x {options.trajectories} = {row_steps} "
                             f"row-steps is over this model's cap of {b.max_row_steps.value} (set by "
                             f"{b.max_row_steps.where}); lower max_steps or trajectories", "options")
    if options.deadline_ms is not None and options.deadline_ms > b.max_deadline_ms.value:
        raise BudgetExceeded(f"deadline_ms={options.deadline_ms} is over this model's cap of "
                             f"{b.max_deadline_ms.value} ms (set by {b.max_deadline_ms.where}); ask for at most "
                             f"{b.max_deadline_ms.value}", "options.deadline_ms")


def check_batch_budget(row_steps: Iterable[int], cap: int) -> None:
    """Raise BudgetExceeded (413) when a batch's items together may hold more row-steps than `cap`."""
    costs = list(row_steps)
    total = sum(costs)
    if total > cap:
        raise BudgetExceeded(f"the batch's {len(costs)} items may take {total} row-steps (max_steps x trajectories, "
                             f"halting=auto's escalation included, summed over the items) but one batch may take at "
                             f"most {cap} "
                             "(RECURSOLVE_BATCH_ROW_STEPS_CAP): split the batch or lower max_steps",
                             "items", status=413, code="batch_over_budget")


def batch_row_steps(service: SolveService, items: Iterable[Mapping[str, Any]],
                    shared: Mapping[str, Any]) -> list[int]:
    """What each batch item may cost once its options are resolved like the item itself will be (shared batch
    options fill the item's unset ones). An item that is invalid on its own costs 0 here: it fails with its
    own 4xx when it runs, and refusing the whole batch for it would hide that error."""
    costs = []
    for raw in items:
        try:
            item = SolveRequest.model_validate(raw)
            given = {**shared, **item.options.model_dump(exclude_none=True)}
            model = service.model_for(item.task, item.model)
            opts = service.resolve_options(model, given)
        except Exception:  # any per-item error (validation, unknown model, over a cap) is reported per item
            costs.append(0)
            continue
        costs.append(opts.max_steps * service.held_trajectories(model, opts))
    return costs
