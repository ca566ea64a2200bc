"""``diffpool-report``'s errors: one line that names the file and what is wrong."""

from __future__ import annotations

from diffpool.cli.report import main


def test_a_malformed_results_json_is_a_one_line_error(tmp_path, capsys):
    job = tmp_path / "sweep" / "job"
    job.mkdir(parents=True)
    (job / "results.json").write_text("{}")
    assert main([str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"diffpool-report: {job / 'results.json'}: missing dataset, fold, num_folds, "
        "model, epochs, fair, test_curve, val_curve, wall_time_s, config\n"
    )
