"""One module per app page. Each builds its widgets and calls xmodal_core; no logic of its own."""
