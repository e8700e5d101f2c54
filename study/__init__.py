"""The study: are compressed models more robust than compact ones of the same size?

``config.load_config`` reads a CONFIG.toml into a grid of cells (model × attack × eps × seed,
plus a sanity cell per model and seed); ``config`` also holds the study's vocabulary (model
kinds, the sanity cell's name, transfer-attack labels). ``runner.run_study`` runs the missing
cells into an SQLite database (``store.Store``), in this process or on a Dask cluster
(``distributed``), from two pure steps: ``build.build_model`` (train, compress, fine-tune,
distil or factorise a model; ``models`` makes it once and keeps its ``.rcnn`` file) and
``cell.evaluate_cell`` (one attack at one eps, or the sanity checks); and
``report.write_report`` renders the database as CSV, Markdown and figures, with the intervals
and paired tests of ``stats`` and the provenance each row records (``provenance``). The command line:
``robustcnn study CONFIG.toml``, ``robustcnn report DB`` and ``robustcnn demo``.
"""
