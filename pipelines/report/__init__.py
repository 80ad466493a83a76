"""Statistics over the repeat phase, tables, plots, explanation figures and the HTML/Markdown report."""
