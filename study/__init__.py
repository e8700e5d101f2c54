"""The study: are compressed models more robust than compact ones of the same size?

``config.load_config`` reads a CONFIG.toml into a grid of cells (model × attack × eps × seed),
``runner.run_study`` runs the missing cells into an SQLite database (``store.Store``), and
``report.write_report`` renders the database as CSV and Markdown. The command line:
``robustcnn study CONFIG.toml`` and ``robustcnn report DB``.
"""
