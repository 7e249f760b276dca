"""Registers each subcommand, in the order `esc --help` lists them."""

from esccli.cli import app
from esccli.cli.fetch import fetch
from esccli.cli.featurize import featurize
from esccli.cli.train import train
from esccli.cli.evaluate import evaluate
from esccli.cli.predict import predict
from esccli.cli.spectrogram import spectrogram

app.command("fetch")(fetch)
app.command("featurize")(featurize)
app.command("train")(train)
app.command("eval")(evaluate)
app.command("predict")(predict)
app.command("spectrogram")(spectrogram)

from esccli.cli.models import models  # noqa: E402

app.command("models")(models)
