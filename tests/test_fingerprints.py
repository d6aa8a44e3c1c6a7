"""The one reuse rule (rfcxlib.training.fingerprints.prepare): a result is kept only under the
fingerprint that made it; the weights survive a change of scoring alone; anything else is discarded.
Each trainer's own reuse test is in its test file (test_train, test_noisy_runs, test_embeddings)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from rfcxlib.config import RunConfig
from rfcxlib.training import fingerprints


class Data:  # what fingerprints read of a data set
    tp = pd.DataFrame({"recording_id": ["a"], "species_id": [1]})
    fp = pd.DataFrame({"recording_id": ["b"], "species_id": [2]})
    train_ids, test_ids = ["a", "b"], ["c"]


def _folder(tmp_path, fingerprint):
    folder = tmp_path / "result"
    fingerprints.prepare(folder, fingerprint, say=False)
    (folder / "weights.h5").write_text("w")
    (folder / "scores.npz").write_text("s")
    return folder


def test_make_hashes_both_levels_and_equal_values_give_equal_hashes():
    a = fingerprints.make({"lr": 0.1, "head": {"units": 8}}, {"hop_s": 1.0})
    b = fingerprints.make({"head": {"units": 8}, "lr": 0.1}, {"hop_s": 1.0})
    assert a == b and a["weights_hash"] == fingerprints.digest({"lr": 0.1, "head": {"units": 8}})
    assert fingerprints.make({"lr": 0.1})["scores_hash"] == fingerprints.digest({})


def test_same_fingerprint_keeps_the_folder(tmp_path):
    current = fingerprints.make({"lr": 0.1}, {"hop_s": 1.0})
    assert fingerprints.verdict(tmp_path / "result", current) == "new"
    folder = _folder(tmp_path, current)
    assert fingerprints.verdict(folder, current) == "same"
    assert fingerprints.prepare(folder, current) == "same"
    assert (folder / "weights.h5").exists() and (folder / "scores.npz").exists()


def test_other_weights_discard_the_folder_and_say_what_changed(tmp_path, capsys):
    folder = _folder(tmp_path, fingerprints.make({"lr": 0.1, "head": {"units": 8}}))
    changed = fingerprints.make({"lr": 0.1, "head": {"units": 16}})
    assert fingerprints.prepare(folder, changed) == "stale"
    out = capsys.readouterr().out
    assert "head.units 8 -> 16" in out and "trained again" in out
    assert not (folder / "weights.h5").exists() and not list(tmp_path.glob(".stale-*"))
    assert fingerprints.read(folder) == changed  # the new fingerprint is recorded


def test_other_scoring_keeps_the_weights_only_where_scores_can_be_remade(tmp_path, capsys):
    folder = _folder(tmp_path, fingerprints.make({"lr": 0.1}, {"hop_s": 1.0}))
    rescored = fingerprints.make({"lr": 0.1}, {"hop_s": 2.0})
    assert fingerprints.verdict(folder, rescored) == "scores"
    assert fingerprints.prepare(folder, rescored, rescore=["scores.npz"]) == "scores"
    out = capsys.readouterr().out
    assert "hop_s 1.0 -> 2.0" in out and "its saved weights scored again" in out
    assert (folder / "weights.h5").exists() and not (folder / "scores.npz").exists()
    # a result that cannot be scored again alone (rescore not given) is made again whole
    assert fingerprints.prepare(folder, fingerprints.make({"lr": 0.1}, {"hop_s": 3.0}), say=False) == "stale"
    assert not (folder / "weights.h5").exists()


def test_a_folder_without_fingerprint_is_made_again(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "weights.h5").write_text("w")
    current = fingerprints.make({"lr": 0.1})
    assert fingerprints.verdict(folder, current) == "stale"
    assert fingerprints.prepare(folder, current, rescore=["scores.npz"], say=False) == "stale"
    assert not (folder / "weights.h5").exists()
    assert json.loads((folder / fingerprints.FILE).read_text())["weights_hash"] == current["weights_hash"]


@pytest.mark.parametrize("change, level", [(dict(learning_rate=1e-2), "weights"), (dict(seed=3), "weights"),
                                           (dict(hop_s=1.0), "scores"), (dict(train_folds=[1]), None),
                                           (dict(data_dir="/elsewhere"), None)])
def test_fold_fingerprint_levels(change, level):
    base = fingerprints.fold_fingerprint(Data, RunConfig(), loss="masked_bce")
    other = fingerprints.fold_fingerprint(Data, RunConfig().replace(**change), loss="masked_bce")
    assert fingerprints.compare(base, other) == {"weights": "stale", "scores": "scores", None: "same"}[level]


def test_folds_by_site_enter_the_fingerprint_folds_by_recording_do_not(tmp_path):
    import dataclasses as dc

    import pandas as pd

    by_recording = fingerprints.fold_fingerprint(Data, RunConfig(), loss="masked_bce")
    assert "fold_sites" not in by_recording["weights"] and "fold_groups" not in by_recording["weights"]
    same = fingerprints.fold_fingerprint(Data, RunConfig().replace(fold_groups="recording"), loss="masked_bce")
    assert fingerprints.compare(by_recording, same) == "same"

    class Sited(Data):
        labelled_ids = ["a", "b"]
        sites = pd.Series(["x", "y"], index=["a", "b"])

    grouped = fingerprints.fold_fingerprint(Sited, RunConfig(), loss="masked_bce")
    assert fingerprints.compare(by_recording, grouped) == "stale"
    Sited.sites = pd.Series(["x", "x"], index=["a", "b"])
    assert fingerprints.compare(grouped, fingerprints.fold_fingerprint(Sited, RunConfig(), loss="masked_bce")) == "stale"


def test_pcen_time_s_counts_only_when_log_is_pcen():
    """``pcen_time_s`` was added after results were fingerprinted: with another ``log`` it is left out
    whatever its value (the old results stay reusable); with ``log="pcen"`` it decides the weights."""
    def weights(**change):
        return fingerprints.fold_fingerprint(Data, RunConfig().replace(**change), loss="masked_bce")

    base = weights(log="log_eps")
    assert "pcen_time_s" not in base["weights"] and "pcen_time_s" in RunConfig().to_dict()["features"]
    assert weights(log="log_eps", pcen_time_s=1.5)["weights_hash"] == base["weights_hash"]
    on, slower = weights(log="pcen"), weights(log="pcen", pcen_time_s=1.5)
    assert on["weights"]["pcen_time_s"] == 0.4 and on["weights_hash"] != base["weights_hash"]
    assert fingerprints.compare(on, slower) == "stale"
    assert "pcen_time_s 0.4 -> 1.5" in fingerprints.describe_change(on, slower)


def test_without_added_drops_the_added_options_while_off():
    base = RunConfig().replace(log="log_eps").to_dict()
    assert fingerprints.without_added(base) == fingerprints.without_added(RunConfig().replace(
        log="log_eps", pcen_time_s=0.2, background_snr_db=[1.0, 2.0], fold_groups="recording").to_dict())
    flat = {n for fields in fingerprints.without_added(base).values() for n in fields}
    assert not flat & {"freq_channel", "p_background_mix", "background_snr_db", "pcen_time_s", "fold_groups"}
    on = fingerprints.without_added(RunConfig().replace(log="pcen", freq_channel=True).to_dict())
    assert on["features"]["pcen_time_s"] == 0.4 and on["features"]["freq_channel"] is True
