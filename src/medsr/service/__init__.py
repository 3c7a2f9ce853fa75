"""Web service: REST API + single-page viewer (``medsr serve``), a thin client of
:mod:`medsr.pipeline`.

``from medsr.service.app import create_app, Settings`` builds the FastAPI app; FastAPI and
Uvicorn are only imported when the service is used (``pip install medsr[web]``). Layout:
``settings`` (options), ``service`` (state + upload intake), ``catalog`` (models offered),
``decode`` (uploads read in a killable child process), ``jobs`` (queue + the work of a job),
``schemas`` (response models), ``security`` (token, upload size), ``previews`` (PNG slices),
``routes/`` (jobs, models, health, pages), ``server`` (uvicorn limits), ``storage`` (job
folders, safe zip extraction), ``cli`` (``medsr serve``).
"""
