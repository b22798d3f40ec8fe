"""The tier-comparison dashboard as a W&B report, built for one group of runs.

    python scripts/wandb_report.py --entity me --project samplernn --group tiers-2026-11-27-12-00-00

Run it after `wandb sync` of the group's runs: saving needs the network and a W&B login
(`wandb login`), and W&B resolves the project when it saves. The panels
are docs/wandb.md's recipe: runs grouped by their `tiers` config key, valid and train NLL
against `trainer/step`, test NLL per tier count (the paper's table), what each tier costs
(parameters, samples/s), the samples table and spectrograms, GPU use. Needs wandb's
`workspaces` extra: pip install "wandb[workspaces]".
"""

import argparse
import sys

from .errors import Unavailable


def _reports():
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise Unavailable('building W&B reports needs wandb\'s workspaces extra: '
                          'pip install "wandb[workspaces]"') from None
    return wr


def build_report(entity: str, project: str, group: str, title: str | None = None):
    """The report (not saved): one panel grid over the runs of `group`, grouped by tiers."""
    wr = _reports()
    runs = wr.Runset(entity=entity, project=project, name=group, filters=f"Group = '{group}'",
                     groupby=["config.tiers"])
    tiers = wr.Config("tiers")
    step = "trainer/step"

    def curve(metric: str, title: str):
        return wr.LinePlot(title=title, x=step, y=[metric], groupby=tiers, groupby_aggfunc="mean",
                           groupby_rangefunc="minmax", smoothing_factor=0.0)

    panels = [
        curve("valid/nll_bits", "valid NLL (bits per sample)"),
        curve("train/nll_bits", "train NLL (bits per sample)"),
        wr.BarPlot(title="test NLL (bits per sample), best", metrics=[wr.SummaryMetric("test/nll_bits")],
                   groupby=tiers, groupby_aggfunc="mean", groupby_rangefunc="minmax"),
        wr.ScatterPlot(title="parameters against test NLL", x=wr.Config("n_parameters"),
                       y=wr.SummaryMetric("test/nll_bits")),
        curve("perf/samples_per_s", "training samples/s"),
        wr.MediaBrowser(title="spectrograms", media_keys=["samples/spectrogram_0"]),
        wr.WeavePanelSummaryTable(table_name="samples/table"),
        curve("system/gpu.0.memoryAllocated", "GPU memory (%)"),
        wr.RunComparer(diff_only="split"),
    ]
    return wr.Report(
        entity=entity, project=project, title=title or f"SampleRNN tiers: {group}",
        description=f"2-, 3- and 4-tier runs of the group {group}, grouped by their tier count.",
        blocks=[
            wr.H1(text="Tiers side by side"),
            wr.P(text=f"The runs of group {group}, one line per tier count (mean over seeds, "
                      "band: min to max). NLL in bits per sample; test NLL is the run's best "
                      "checkpoint on the whole test split."),
            wr.PanelGrid(runsets=[runs], panels=panels),
        ])


def main(argv=None) -> None:
    from .errors import one_line_errors
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity", required=True, help="W&B user or team")
    parser.add_argument("--project", required=True, help="W&B project the runs were synced to")
    parser.add_argument("--group", required=True, help="the runs' group (e.g. a sweep's)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    with one_line_errors():
        report = build_report(args.entity, args.project, args.group, args.title)
        try:
            report.save()
        except Exception as error:  # no network, no login, no such project: say which
            raise Unavailable(f"the report could not be saved to W&B ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:300]}); check `wandb login` and the "
                              "network") from None
        print(f"report saved: {report.url}", file=sys.stderr)
