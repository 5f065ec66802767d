"""Cases from alerts: the workflow, its read model, notices to enterprises, tickets to officers, evidence.

Where a change goes:
- a read of cases, tickets, notices, answers or groups: a function in `queries` (scoped to the caller);
- a write: an entry point in `workflow`, whose state changes go through `cases.transition`/`record`;
- a case rule: `rules`; a notice text: `notices` and `templates/`;
- a delivery channel: one class in `channels`, added to `CHANNELS`.
"""
