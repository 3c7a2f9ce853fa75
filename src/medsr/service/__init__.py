"""Web service: REST API + single-page viewer (``medsr serve``).

``from medsr.service.app import create_app, Settings`` builds the FastAPI app; FastAPI and
Uvicorn are only imported when the service is used (``pip install medsr[web]``).
"""
