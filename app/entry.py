"""Deep links on a fresh server. Until the entry script has called st.navigation once, Streamlit
serves a folder named pages/ in its old way: the first request to a fresh server at /live ran
pages/live.py alone, without the sidebar, its settings or the chosen models. Each page therefore
checks that the entry script ran in this session; if not, it goes through the entry script,
which then opens the page that was asked for."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

ENTRY_KEY = "entry_script_ran"
WANTED_KEY = "page_asked_for"
ENTRY_SCRIPT = "streamlit_app.py"


def require_entry(page_file: str) -> None:
    """First thing a page does: when this session has not run the entry script, go through it
    and come back to this page."""
    if st.session_state.get(ENTRY_KEY):
        return
    st.session_state[WANTED_KEY] = Path(page_file).stem    # the page's URL path, as Streamlit names it
    st.switch_page(ENTRY_SCRIPT)


def entry_ran(pages: Sequence) -> None:
    """Called by the entry script after st.navigation: marks the session, and opens the page a
    deep link asked for before the entry script had run."""
    st.session_state[ENTRY_KEY] = True
    wanted = st.session_state.pop(WANTED_KEY, None)
    for page in pages:
        if wanted and page.url_path == wanted:
            st.switch_page(page)
