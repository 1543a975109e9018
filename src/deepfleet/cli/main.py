"""The `deepfleet` command: every sub-command module registers itself on one typer app."""

from __future__ import annotations

import typer

from deepfleet.cli import (
    apply_cmd,
    bench_cmd,
    chat_cmd,
    config_cmds,
    doctor_cmd,
    fleet_cmds,
    keys_cmd,
    models_cmds,
    node_cmd,
    pd_cmd,
    plan_cmd,
    render_cmd,
    sim_cmd,
    state_cmd,
    top_cmd,
)

app = typer.Typer(
    name="deepfleet",
    help="Serve DeepSeek-R1 and other models on a fleet of GPU, Ascend or CPU nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module exposes register(app). Add new command modules to this tuple.
for _module in (
    fleet_cmds,
    apply_cmd,
    config_cmds,
    models_cmds,
    chat_cmd,
    bench_cmd,
    plan_cmd,
    pd_cmd,
    sim_cmd,
    keys_cmd,
    state_cmd,
    top_cmd,
    render_cmd,
    node_cmd,
    doctor_cmd,
):
    _module.register(app)


def main() -> None:
    app()
