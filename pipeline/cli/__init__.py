"""The ``viewfinder`` command line, one module per command group. Heavy imports happen inside
commands, so ``--help`` is fast."""

from __future__ import annotations

from typing import Annotated

import typer

from .agent_eval import eval_composed_cmd, eval_dialogue_cmd, eval_feedback_cmd, eval_genid_cmd, eval_normalise_cmd
from .bench import bench_app
from .caption import caption_cmd
from .chat import chat_cmd
from .common import APP_SETTINGS, ViewfinderTyper, setup_logging
from .demo import demo_cmd
from .eval import eval_cmd
from .index import index_cmd
from .models import models_app
from .probe import eval_probe_cmd
from .prompts import prompts_app
from .scenes import app as scenes_app
from .search import search_cmd
from .serve import serve_cmd
from .train import train_app

app = ViewfinderTyper(**APP_SETTINGS)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    setup_logging(verbose)


app.command("index")(index_cmd)
app.command("search")(search_cmd)
app.command("caption")(caption_cmd)
app.command("demo")(demo_cmd)
app.command("eval")(eval_cmd)
app.command("eval-normalise")(eval_normalise_cmd)
app.command("eval-feedback")(eval_feedback_cmd)
app.command("eval-composed")(eval_composed_cmd)
app.command("eval-dialogue")(eval_dialogue_cmd)
app.command("eval-genid")(eval_genid_cmd)
app.command("eval-probe")(eval_probe_cmd)
app.command("chat")(chat_cmd)
app.command("serve")(serve_cmd)
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")
app.add_typer(prompts_app, name="prompts")
app.add_typer(scenes_app, name="scenes", help="The synthetic scene benchmark: generate and inspect.")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
