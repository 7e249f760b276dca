"""`esc models`: list the trained models, or choose the default one."""

from typing import Optional

import typer

from esccli.cli import common


def models(
    default: Optional[str] = typer.Option(None, "--default", metavar="NAME", autocompletion=common.complete_models, help="Make this model the default for predict and eval."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout."),
) -> None:
    """List trained models (fold, accuracy, date) or set the default one."""
    from rich.table import Table

    from esccli import store

    layout = common.layout()
    if default is not None:  # "" too: set_default says it is not a name
        store.set_default(layout, default)
        common.err.print(f"default model: {default}")
    infos = store.list_models(layout)
    builtin = store.BUILTIN_PATH.is_file()
    in_use = store.default_name(layout, infos)
    common.warn_if_default_lost(layout, in_use or (store.BUILTIN_NAME if builtin else None))
    if as_json:
        common.print_json([{**i.__dict__, "path": str(i.path), "val_acc": common.stored_float(i.val_acc)}
                           for i in infos])
        return
    if builtin and (not infos or in_use == store.BUILTIN_NAME):
        common.err.print(common.typed_here(f"predict and eval use the built-in model (`-m {store.BUILTIN_NAME}`)"
                         + ("; train one with `esc train`" if not infos else "")), soft_wrap=True, markup=False)
    elif not infos:
        common.err.print(common.typed_here("no trained models; train one with `esc train`"), soft_wrap=True,
                         markup=False)
    elif builtin:
        common.dim_line(f"the built-in model is `-m {store.BUILTIN_NAME}`; "
                        f"`esc models --default {store.BUILTIN_NAME}` makes it the default again")
    if not infos:
        return
    t = Table(title=f"models in {layout.models}")
    for col in ("", "name", "arch", "held-out fold", "accuracy", "epochs", "created"):
        t.add_column(col)
    for i in infos:
        acc = "-" if i.val_acc is None else f"{i.val_acc:.2%}" + (" (picked on fold)" if i.selected_on_fold else "")
        arch = common.arch_label(i.member_arch, i.members) if i.member_arch else i.arch
        t.add_row("*" if i.is_default else "", i.name, arch, "all" if i.fold is None and not i.error else str(i.fold or "-"),
                  i.error or acc, str(i.epochs or "-"), (i.created or "-")[:16].replace("T", " "))
    common.out.print(t)
