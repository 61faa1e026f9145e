"""/callbacks: create, list, read, change and delete callbacks; rotate a webhook's signing secret."""
from __future__ import annotations

from flask_openapi3 import Tag

from controllers import callbacks
from routes import ERRORS, Blueprint, answer, needs, services
from schemas import Callback, CallbackCreate, CallbackList, CallbackPath, CallbackUpdate

tag = Tag(name="callbacks", description="Named, reusable actions")
bp = Blueprint("callbacks", __name__, abp_tags=[tag], abp_responses=ERRORS)


@bp.get("/callbacks", responses={200: CallbackList}, security=needs("read"))
def list_callbacks():
    """List callbacks."""
    return answer({"callbacks": callbacks.list_callbacks(services().db)})


@bp.post("/callbacks", responses={201: Callback}, security=needs("admin"))
def create_callback(body: CallbackCreate):
    """Create a callback."""
    s = services()
    return answer(callbacks.create_callback(s.db, s.settings, body), 201)


@bp.get("/callbacks/<int:callback_id>", responses={200: Callback}, security=needs("read"))
def get_callback(path: CallbackPath):
    """Read a callback."""
    return answer(callbacks.get_callback(services().db, path.callback_id))


@bp.put("/callbacks/<int:callback_id>", responses={200: Callback}, security=needs("admin"))
def put_callback(path: CallbackPath, body: CallbackUpdate):
    """Change any subset of a callback's writable fields."""
    s = services()
    return answer(callbacks.update_callback(s.db, s.settings, path.callback_id, body))


@bp.patch("/callbacks/<int:callback_id>", responses={200: Callback}, security=needs("admin"))
def patch_callback(path: CallbackPath, body: CallbackUpdate):
    """Same as PUT: change any subset of a callback's writable fields."""
    return put_callback(path=path, body=body)


@bp.post("/callbacks/<int:callback_id>/rotate-secret", responses={200: Callback}, security=needs("admin"))
def rotate_secret(path: CallbackPath):
    """Give a webhook a new signing secret. The answer shows it, this once; later answers show "***"."""
    return answer(callbacks.rotate_secret(services().db, path.callback_id))


@bp.delete("/callbacks/<int:callback_id>", responses={204: None}, security=needs("admin"))
def delete_callback(path: CallbackPath):
    """Delete a callback that has no events at all (409 with the count otherwise: events are audit history)."""
    callbacks.delete_callback(services().db, path.callback_id)
    return "", 204
