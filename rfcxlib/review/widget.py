"""Reviewing queries in JupyterLab: one query at a time, its spectrogram with the species' band
boxed, a player of the window, and the buttons present / absent / skip.

Each click is recorded at once in the labels folder (:class:`rfcxlib.review.answers.AnswerStore`,
atomic), and the next unanswered query is shown; a reopened notebook starts from the first query
not yet answered. Built on ipywidgets; the player is ``IPython.display.Audio``.

Tested in ``tests/test_review.py`` (in a real JupyterLab kernel).
"""
from __future__ import annotations

import io
from typing import Optional

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Audio, display

from rfcxlib.plots import review as review_plots
from rfcxlib.review.answers import AnswerStore
from rfcxlib.review.clips import window_audio


class ReviewWidget:
    """The review of ``queries`` (rows of :func:`rfcxlib.review.queries.rank_queries`) into ``store``.

    Parameters
    ----------
    queries : pd.DataFrame
    dataset : rfcxlib.data.tables.Dataset
        Where the recordings are.
    store : AnswerStore
    annotator : str
        Who answers (written with every row).
    pad_s : float
        Seconds of context shown and played either side of the window.
    names : ``{species: name}`` for the titles (default ``s<id>``).
    """

    def __init__(self, queries: pd.DataFrame, dataset, store: AnswerStore, *, annotator: str = "",
                 pad_s: float = 1.0, names: Optional[dict] = None):
        self.queries = queries.reset_index(drop=True)
        self.dataset, self.store, self.annotator, self.pad_s = dataset, store, annotator, pad_s
        self.names = names or {}
        self.position = self._first_unanswered()
        self.title = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="900px"))
        self.player = widgets.HTML()  # the player's HTML (not an Output widget: papermill runs it headless)
        self.buttons = {answer: widgets.Button(description=answer, button_style=style, tooltip=tip)
                        for answer, style, tip in (("present", "success", "the species calls in the window"),
                                                   ("absent", "danger", "the species does not call in the window"),
                                                   ("skip", "", "not sure: ask no more"))}
        for answer, button in self.buttons.items():
            button.on_click(lambda _, a=answer: self.answer(a))
        self.status = widgets.HTML()
        self.box = widgets.VBox([self.title, self.image, self.player, widgets.HBox(list(self.buttons.values())),
                                 self.status])
        self.show()

    def _ipython_display_(self):
        display(self.box)

    def _first_unanswered(self) -> int:
        done = self.store.answered()
        return next((i for i, q in enumerate(self.queries.query_id) if q not in done), len(self.queries))

    def refresh(self) -> None:
        """Show the first query not yet answered (after answers given elsewhere)."""
        self.position = self._first_unanswered()
        self.show()

    @property
    def current(self) -> Optional[pd.Series]:
        return self.queries.iloc[self.position] if self.position < len(self.queries) else None

    def show(self) -> None:
        """Draw the current query (or say that the queue is done)."""
        counts = self.store.counts()
        self.status.value = (f"<small>{self.position} of {len(self.queries)} reviewed here; labels folder "
                             f"{self.store.folder}: {counts['present']} present, {counts['absent']} absent, "
                             f"{counts['skip']} skipped</small>")
        q = self.current
        if q is None:
            self.title.value = "<b>All queries are answered.</b> Run the next cells to retrain the heads."
            self.image.value = b""
            self.player.value = ""
            for b in self.buttons.values():
                b.disabled = True
            return
        name = self.names.get(int(q.species_id), f"s{int(q.species_id)}")
        self.title.value = (f"<b>{self.position + 1}/{len(self.queries)}</b> &nbsp; is <b>{name}</b> calling in "
                            f"{q.recording_id}, {q.start_s:.1f}-{q.end_s:.1f} s? &nbsp; <small>score "
                            f"{q.score:.2f}, spread {q.spread:.2f} ({q.strategy})</small>")
        y, sr, offset = window_audio(self.dataset.path(q.recording_id, "train"), start_s=q.start_s, end_s=q.end_s,
                                     pad_s=self.pad_s)
        fig = review_plots.query_spectrogram(y, sr=sr, offset_s=offset, query=q, title="")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.image.value = buffer.getvalue()
        self.player.value = Audio(data=y, rate=sr)._repr_html_()
        for b in self.buttons.values():
            b.disabled = False

    def answer(self, answer: str) -> None:
        """Record ``answer`` for the current query (atomically) and show the next one."""
        q = self.current
        if q is None:
            return
        self.store.add(self.queries.iloc[[self.position]], [answer], annotator=self.annotator)
        self.refresh()
