"""Static PNG export of plotly figures through kaleido 1.x and an installed Chromium.

kaleido drives a browser it never downloads. :func:`png_problem` says in one line whether
export works here, and how to make it work (``apt-get install chromium``), before any figure
is computed, so ``actlens figures`` (:mod:`actlens.figures`) can skip PNGs and still write
HTML and CSV. Its probe export is bounded in time: kaleido's sync server waits forever on a
browser that failed to start.
"""

import os
import threading
import warnings

INSTALL_BROWSER = "apt-get install chromium"
PNG_TIMEOUT_S = 120.0  # a first browser start on a busy 2-core machine took ~10 s


def find_browser() -> str | None:
    """The Chromium kaleido would drive, or None: choreographer's own search (``BROWSER_PATH``,
    ``PATH``, the usual install paths), without starting anything or downloading a browser."""
    from choreographer.browsers import Chromium  # kaleido 1.x's browser driver, installed with it

    path = Chromium.find_browser(skip_local=False)
    return str(path) if path and os.access(path, os.X_OK) else None


def png_problem(timeout: float = PNG_TIMEOUT_S) -> str | None:
    """None when PNG export works (kaleido + a browser), else why not, in one line.

    Looks for the browser before starting kaleido: kaleido's sync server starts its browser in
    a thread, and when that fails the thread dies and every later export waits forever. The
    probe export is bounded by ``timeout`` seconds for the same reason.
    """
    try:
        import kaleido
    except ImportError:
        return "kaleido is not installed (pip install 'kaleido>=1.5,<2')"
    if find_browser() is None:
        return f"no Chromium found for kaleido; `{INSTALL_BROWSER}` gives PNGs"
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            kaleido.start_sync_server(silence_warnings=True)
            import plotly.graph_objects as go

            go.Figure(go.Scatter(x=[0, 1], y=[0, 1])).to_image(format="png", width=40, height=40)
            outcome.append(None)
        except Exception as err:  # kaleido raises several types when the browser does not run
            first = str(err).splitlines()[0] if str(err) else ""
            outcome.append(f"PNG export failed ({type(err).__name__}: {first}); `{INSTALL_BROWSER}` gives PNGs")

    thread = threading.Thread(target=probe, daemon=True, name="actlens-png-probe")
    thread.start()
    thread.join(timeout)
    if outcome:
        if outcome[0] is not None:
            _stop_kaleido(kaleido)
        return outcome[0]
    # the browser thread died or hangs: never export through it (the daemon thread is left behind)
    return f"PNG export did not finish within {timeout:.0f} s (is the browser working?); `{INSTALL_BROWSER}` gives PNGs"


def _stop_kaleido(kaleido) -> None:
    try:
        kaleido.stop_sync_server(silence_warnings=True)
    except Exception:  # a server whose thread already died: nothing left to stop
        pass


__all__ = ["INSTALL_BROWSER", "PNG_TIMEOUT_S", "find_browser", "png_problem"]
