"""The server's logic, without Gradio: sessions, their models, and what every event does.

:class:`ChatServer` holds what all sessions share (the model shelf, the default model, the examples, the limits)
and one method per event of the page and the API. Each takes the raw payload (a visitor can send anything), checks
it, and answers through the chat; a refusal is an :class:`~explainer.errors.ExplainerError`, which the Gradio layer
(:mod:`explainer.server.ui`) shows as a pop-up, and a warning goes through :meth:`ChatServer.warn`. The Gradio
layer only adds the components: what an event's outputs look like (:meth:`ChatServer.outputs`) and the layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from explainer.cams import METHODS
from explainer.chat import AUTO, ChatSession, Reply, answer_once
from explainer.deadline import check as check_deadline
from explainer.deadline import time_budget
from explainer.demo import load_examples
from explainer.demo.audit_data import write_audit_zip
from explainer.demo.generate import MARK_BOX
from explainer.errors import ExplainerError
from explainer.evaluation.audit import AuditOptions
from explainer.evaluation.audit_archive import audit_archive
from explainer.evaluation.calibration import calibrate_folder
from explainer.inputs.archive import unpacked
from explainer.inputs.images import pixel_budget
from explainer.models.loading import LoadedModel
from explainer.prose import quote, render
from explainer.server.budget import ModelLimits, check_loaded_model, check_model_file
from explainer.server.conversation import Visit, message_parts, reply_messages, user_messages, without_options
from explainer.server.serving import ServerLimits, fold, painted_mask
from explainer.server.shelf import (
    DEMO_MODEL_NAMES,
    ModelMenu,
    ModelShelf,
    UploadRegistry,
    builtin_choices,
    load_default,
)
from explainer.server.uploads import UploadRefused, uploaded_file

logger = logging.getLogger("gradcam_chat")

#: The answer to any failure we did not foresee: logged in full on the server, never shown.
FAILED = "Sorry, something went wrong on the server while answering. The conversation is kept; please try again."
#: The Audit tab's model choice meaning "the model answering in the chat" (e.g. the visitor's uploaded model).
CURRENT_MODEL = "(current)"
#: The model of the Audit tab's sample set: the "Clever Hans" demo model, right for the wrong reason.
SAMPLE_MODEL = "shapes-shortcut"
#: The settings panel's controls, in the order the events pass their values.
SETTING_NAMES = ("opacity", "colormap", "threshold", "top_k", "method", "segment")


class Refusal(ExplainerError):
    """An event refuses its payload; ``title`` heads the pop-up."""

    def __init__(self, message: str, title: str = "Error"):
        super().__init__(message)
        self.title = title


class ChatServer:
    """What all sessions share, and one method per event (see the module docstring).

    Parameters
    ----------
    shelf : ModelShelf, optional
        The loaded models all sessions share (default: a new shelf).
    limits : ServerLimits, optional
        The public server's limits (default: from the environment).
    """

    def __init__(self, shelf: ModelShelf | None = None, limits: ServerLimits | None = None):
        self.shelf = shelf or ModelShelf()
        self.limits = limits or ServerLimits.from_env()
        self.uploads = UploadRegistry(self.limits.uploaded_models)
        self.model_limits = ModelLimits.from_env()
        # The default model is loaded and warmed up now, at start-up, not on the first question.
        self.default_name, self.default, self.default_reason = load_default(self.shelf)
        self.builtins = builtin_choices(self.default_name)
        self.examples = [e for e in load_examples() if e.model in {"", *(n for _l, n in self.builtins)}]
        self.upload_folder = tempfile.gettempdir()  # the Gradio layer sets its own
        self.gone: Callable[[str], bool] = lambda _session: False  # whether a session's visitor left

    # -------------------------------------------------------------------------- what the Gradio layer fills in

    def outputs(self, visit: Visit, busy: bool = False) -> tuple:
        """The values of a chat event's outputs (the Gradio layer returns components)."""
        return visit.messages, visit

    def picture(self, image: np.ndarray, caption: str) -> Any:
        """A picture message's content (the Gradio layer returns an image component)."""
        return {"image": image, "caption": caption}

    def warn(self, text: str) -> None:
        """Tell the visitor ``text`` without stopping the event (the Gradio layer shows a pop-up)."""
        logger.info("warning: %s", text)

    # ------------------------------------------------------------------------------------------ sessions

    def preload(self) -> None:
        """In the background: the demo models, and the layers "show layers" explains (start this once serving)."""
        demos = [name for _label, name in self.builtins if name in DEMO_MODEL_NAMES and name != self.default_name]
        self.shelf.preload([self.default_name, *demos])

    def new_visit(self) -> Visit:
        menu = ModelMenu(self.shelf, list(self.builtins), registry=self.uploads)
        return self._attach(Visit(ChatSession(self.default, loader=menu.get, model_names=menu.names()), menu))

    def _attach(self, visit: Visit) -> Visit:
        """Make ``visit`` the one told when its menu loses its uploaded model."""
        def dropped(model: LoadedModel, evicted: bool) -> None:  # a function: deep copies leave it alone
            self.model_dropped(visit, model, evicted)

        visit.menu.on_drop = dropped
        return visit

    def model_dropped(self, visit: Visit, model: LoadedModel, evicted: bool) -> None:
        """``visit`` lost its uploaded ``model``: answer with the default model, and say why if it was evicted."""
        switched = visit.chat.forget_model(model, self.default)
        visit.chat.model_names = tuple(visit.menu.names())
        if evicted and switched:
            text = render("model_dropped", evicted=True, name=model.name, fallback=self.default_name,
                          limit=self.uploads.limit)
            visit.messages = [*without_options(visit.messages), {"role": "assistant", "content": text}]

    def end_visit(self, visit: Visit | None) -> None:
        """The session is over (tab closed, or idle past its time to live): free its uploaded model."""
        if isinstance(visit, Visit):
            visit.menu.release()

    def show(self, visit: Visit, reply: Reply) -> None:
        messages = without_options(visit.messages) + reply_messages(reply, self.picture)
        visit.messages, visit.folded = fold(messages, self.limits.shown_messages, visit.folded)

    @contextlib.contextmanager
    def budget(self, session: str | None) -> Iterator[None]:
        """This turn's budgets: its time (the work also stops early when the visitor's connection is gone), and the
        pixels its images may decode."""
        with time_budget(self.limits.turn_seconds, (lambda: self.gone(session)) if session else None), self.pixels():
            yield

    def pixels(self, total: int | None = None) -> contextlib.AbstractContextManager:
        """One request's pixel budget: ``total`` pixels in all (default: the per-request limit), each image at most
        the per-image limit; every image file is counted from its header before it is decoded."""
        return pixel_budget(total or self.limits.request_pixels, self.limits.image_pixels)

    @contextlib.contextmanager
    def _long_budget(self, session: str | None) -> Iterator[None]:
        """An audit's or a calibration's budgets: no turn time limit (the audit has its own), stopped when the
        visitor leaves, and the pixels of a whole validation set."""
        with time_budget(None, (lambda: self.gone(session)) if session else None), \
                self.pixels(self.limits.audit_pixels):
            yield

    def upload(self, payload: Any) -> str | None:
        """The checked server path of a raw file payload, or None (:class:`UploadRefused` outside the uploads)."""
        return uploaded_file(payload, self.upload_folder)

    # ---------------------------------------------------------------------------------------------- events

    def chat(self, message: Any, visit: Visit | None, session: str | None = None) -> Iterator[tuple]:
        """One turn: show the user's message at once, then the answer (the ``/chat`` endpoint)."""
        visit = visit or self.new_visit()
        try:
            text, files = message_parts(message, self.upload_folder)
        except UploadRefused as err:  # a reference to a server file: refused before anything is opened
            text = message.get("text") if isinstance(message, dict) else ""
            visit.messages = without_options(visit.messages) + user_messages(str(text or ""), [])
            self.show(visit, visit.chat.refuse(err))
            yield self.outputs(visit)
            return
        yield from self.ask(visit, text, files, session)

    def ask(self, visit: Visit, text: str, files: list[str], session: str | None = None,
            region: np.ndarray | None = None) -> Iterator[tuple]:
        """Show the user's message, a progress line for slow answers, then the answer; never loses the chat.

        ``region`` is a mask the visitor drew: the answer then compares the evidence with it.
        """
        if not text.strip() and not files:
            yield self.outputs(visit)
            return
        visit.messages = without_options(visit.messages) + user_messages(text, files)
        yield self.outputs(visit, busy=True)
        asked = visit.messages
        try:
            note = visit.chat.progress_note(text)
            if note:  # slow answers (Score-CAM, trust check, comparisons) say what they are doing meanwhile
                visit.messages = [*asked, {"role": "assistant", "content": note}]
                yield self.outputs(visit, busy=True)
                visit.messages = asked
            with self.budget(session):
                reply = visit.chat.respond(text, files, region=region)
            self.show(visit, reply)
        except Exception:  # a failure of the wiring itself (e.g. writing a picture): apologise in the chat
            logger.exception("chat turn failed")
            visit.messages = [*asked, {"role": "assistant", "content": FAILED}]
        yield self.outputs(visit)

    def canvas(self, visit: Visit | None) -> dict:
        """The region editor's canvas: the conversation's current image, to paint the expected region on."""
        current = visit.chat.current if isinstance(visit, Visit) else None
        if current is None:
            raise Refusal(render("region_no_image"))
        return {"background": current.image, "layers": [], "composite": None}

    def painted(self, editor: Any, visit: Visit | None, session: str | None = None) -> Iterator[tuple]:
        """The visitor painted where the evidence should be: compare the model's map with it.

        The editor's value arrives raw: its layers are PNG uploads, each counted against the pixel budget from its
        header and reduced to its alpha channel, never decoded whole first.
        """
        visit = visit or self.new_visit()
        with self.pixels():
            mask = painted_mask(editor, self.upload_folder, self.limits.painted_layers)
        if mask is None:
            raise Refusal(render("region_nothing_painted"))
        yield from self.ask(visit, render("region_question"), [], session, region=mask)

    def example(self, index: Any, visit: Visit | None, session: str | None = None) -> Iterator[tuple]:
        """An example was clicked: switch to its model if needed, then upload its image with its question."""
        visit = visit or self.new_visit()
        if index is None:
            yield self.outputs(visit)
            return
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.examples):
            raise Refusal(f"There is no example {quote(index)}: click one of the {len(self.examples)} examples "
                          "below the chat.")
        example = self.examples[index]
        if example.model and visit.menu.key_of(visit.chat.model) != example.model:
            try:
                visit.chat.set_model(visit.menu.get(example.model))
            except ExplainerError as err:  # the example is still worth asking of the current model
                self.warn(str(err))
        visit.chat.know(example.image, shows=example.label, mark_box=list(MARK_BOX) if example.mark else None)
        yield from self.ask(visit, example.question, [example.image], session)  # our own file: not an upload

    def use_model(self, key: Any, visit: Visit | None) -> tuple:
        """The model picker changed: answer with that model from now on, and say so in the chat."""
        visit = visit or self.new_visit()
        if not isinstance(key, str):
            raise Refusal(f"There is no model {quote(key)} in the menu; pick one of its entries.")
        if key != visit.menu.key_of(visit.chat.model):
            try:
                model = visit.menu.get(key)
            except ExplainerError as err:
                self.warn(str(err))
                return self.outputs(visit)
            # The picker is the user's move: shown as their message, so the answers it brings are a turn apart.
            visit.messages = without_options(visit.messages) + user_messages(f"Use the {key} model", [])
            self.show(visit, visit.chat.switch_model(model))
        return self.outputs(visit)

    def add_model_file(self, model_file: Any, labels_file: Any, visit: Visit | None) -> tuple:
        """Load a visitor's model file (Keras safe mode) into this session's menu and switch to it."""
        visit = visit or self.new_visit()
        try:
            # The architecture is checked against the memory budgets before a single weight is allocated.
            key, model = visit.menu.add_upload(self.upload(model_file), self.upload(labels_file),
                                               checker=lambda path: check_model_file(path, self.model_limits))
        except ExplainerError as err:
            raise Refusal(str(err), title="The model was not loaded") from None
        return self._switch_to_own(visit, key, model)

    def add_hub_model(self, model_id: Any, visit: Visit | None) -> tuple:
        """Load a Hugging Face Hub model (or Keras Hub preset) for this session, like an upload, and switch to it."""
        visit = visit or self.new_visit()
        try:
            key, model = visit.menu.add_hub(model_id if isinstance(model_id, str) else "",
                                            checker=lambda loaded: check_loaded_model(loaded.keras_model,
                                                                                      self.model_limits),
                                            max_bytes=self.limits.download_mb * 2**20)
        except ExplainerError as err:
            raise Refusal(str(err), title="The model was not loaded") from None
        return self._switch_to_own(visit, key, model)

    def _switch_to_own(self, visit: Visit, key: str, model: LoadedModel) -> tuple:
        visit.chat.model_names = tuple(visit.menu.names())
        visit.messages = without_options(visit.messages) + user_messages(f"Use my model {key}", [])
        self.show(visit, visit.chat.switch_model(model))
        return self.outputs(visit)

    def settings_changed(self, visit: Visit | None, *values: Any) -> tuple:
        """A control in the settings panel changed: the chat says so in a line and redraws the current picture.

        The panel sends all its values (in :data:`SETTING_NAMES` order); those that differ from the session's are
        applied one by one, each refused value answered in the chat without changing anything.
        """
        visit = visit or self.new_visit()
        if len(values) != len(SETTING_NAMES):
            raise Refusal(f"The settings panel sends {len(SETTING_NAMES)} values, not {len(values)}.")
        current = visit.chat.settings
        shown = {"method": current.method or AUTO}
        changed = [(name, value) for name, value in zip(SETTING_NAMES, values, strict=True)
                   if value != shown.get(name, getattr(current, name))]
        for name, value in changed:
            reply = visit.chat.change_setting(name, value)
            if reply.error:
                self.warn(reply.markdown.splitlines()[0])
            else:
                self.show(visit, reply)
        return self.outputs(visit)

    def restart(self, visit: Visit | None) -> tuple:
        """A fresh conversation with the same model and settings (the chat's bin icon)."""
        old = visit or self.new_visit()
        visit = self._attach(Visit(ChatSession(old.chat.model, loader=old.menu.get, model_names=old.menu.names(),
                                               settings=old.chat.settings), old.menu))
        return self.outputs(visit)

    def explain_once(self, image: Any, question: Any, model_name: Any, expected_region: Any,
                     session: str | None = None) -> tuple[str, np.ndarray | None, dict]:
        """One image and question in, no conversation kept: (Markdown answer, overlay or None, facts as JSON)."""
        name = model_name if isinstance(model_name, str) and model_name else self.default_name
        builtin = {n for _label, n in self.builtins}
        if name not in builtin:
            raise Refusal(f"Unknown model {quote(name)}; choose one of {', '.join(sorted(builtin))}.")
        path = self.upload(image)  # before the model: a refused reference costs nothing
        model = self.shelf.get(name)
        with self.budget(session):
            region = expected_region.strip()[:200] if isinstance(expected_region, str) else ""
            reply = answer_once(model, path, question if isinstance(question, str) else "", region=region or None)
        return reply.markdown, reply.image, reply.to_dict()

    def audit_zip(self, archive: Any, model_name: Any, method: Any, visit: Visit | None, session: str | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> tuple[str, list[str]]:
        """The Audit tab: a zip of a validation set in, (summary, [report.html, results.jsonl]) out.

        Bounded by the zip's size, its image count and the pixels its images declare (all checked before a pixel
        is decoded), and by a time limit (the report then covers the images explained so far); stops when the
        visitor leaves. ``progress(done, total, description)`` is told after each image.
        """
        path = self.upload(archive)
        if path is None:
            raise Refusal(render("audit_no_zip"))
        return self._audit_file(path, model_name, method, visit, session, progress)

    def _audit_file(self, path: str, model_name: Any, method: Any, visit: Visit | None, session: str | None,
                    progress: Callable[[int, int, str], None] | None) -> tuple[str, list[str]]:
        if not isinstance(method, str) or (method != AUTO and method not in METHODS):
            raise Refusal(f"Unknown method {quote(method)}; choose one of {', '.join(METHODS)}.")
        model = self._audit_model(model_name, visit)
        options = AuditOptions(method=None if method == AUTO else method).for_model(model)
        limits = self.limits
        work = Path(tempfile.mkdtemp(prefix="audit-", dir=self.upload_folder))
        desc = f"Explaining (an audit here stops after {limits.audit_seconds:g} s)"

        def step(done: int, total: int) -> None:
            check_deadline()  # the visitor left: stop here
            if progress is not None:
                progress(done, total, desc)

        with self._long_budget(session):
            run = audit_archive(path, model, work / "out", options, max_images=limits.audit_images,
                                max_pixels=limits.audit_pixels, seconds=limits.audit_seconds, on_record=step,
                                name="the uploaded set", unpack_to=work / "in")
        text = render("audit_summary", run=run, model=model.name, method=METHODS[options.method].display_name,
                      threshold=options.wrong_reason_threshold, notes=run.notes)
        return text, [str(run.report), str(run.results)]

    def sample_audit(self, method: Any, visit: Visit | None, session: str | None = None,
                     progress: Callable[[int, int, str], None] | None = None) -> tuple[str, list[str]]:
        """The Audit tab's sample: the bundled shortcut model on a demo validation set with the shapes' masks (it is
        right for the wrong reason: the audit shows it)."""
        if SAMPLE_MODEL not in {name for _label, name in self.builtins}:
            raise Refusal(f"The sample needs the bundled {SAMPLE_MODEL} model, which this server does not offer.")
        sample = write_audit_zip(Path(self.upload_folder) / "samples" / f"{SAMPLE_MODEL}-validation-set.zip")
        return self._audit_file(str(sample), SAMPLE_MODEL, method, visit, session, progress)  # our file: no gate

    def calibrate_zip(self, archive: Any, visit: Visit | None, session: str | None = None,
                      progress: Callable[[int, int, str], None] | None = None) -> str:
        """The Audit tab's "calibrate the chat's model on this set": temperature, prediction sets and the
        unusual-image check fitted on the zip's class folders, for this session's model only (nothing is written)."""
        visit = visit or self.new_visit()
        path = self.upload(archive)
        if path is None:
            raise Refusal(render("audit_no_zip"))
        model, limits = visit.chat.model, self.limits
        work = Path(tempfile.mkdtemp(prefix="calibrate-", dir=self.upload_folder))
        with self._long_budget(session), unpacked(path, work, max_images=limits.audit_images,
                                                  max_pixels=limits.audit_pixels) as folder:
            done = [0]

            def step(count: int) -> None:
                check_deadline()  # the visitor left: stop here
                done[0] += count
                if progress is not None:
                    progress(done[0], folder.count, "Reading the images (forward passes only)")

            fit = calibrate_folder(model, folder.images, progress=step)
        calibrated = dataclasses.replace(model, info=dataclasses.replace(
            model.info, calibration=fit.calibration, features=fit.reference))  # the same network and its traces
        key = visit.menu.key_of(model)
        if key is not None:
            visit.menu.recalibrated(key, calibrated)
        visit.chat.set_model(calibrated)
        return render("calibrated", model=model.name, fit=fit, notes=[*folder.notes, *fit.notes])

    def report_page(self, files: Any) -> str:
        """An audit's report.html (from the audit's own output payload) as a frame for the page, scaled to it."""
        paths = [self.upload(item) for item in (files if isinstance(files, list) else [])[:4]]
        report = next((Path(p) for p in paths if p and Path(p).name == "report.html"), None)
        if report is None:
            return ""
        page = html.escape(report.read_text(encoding="utf-8"), quote=True)
        return (f'<iframe title="Audit report" srcdoc="{page}" '
                'style="width:100%;height:80vh;border:1px solid #ddd;border-radius:8px"></iframe>')

    def _audit_model(self, key: Any, visit: Visit | None) -> LoadedModel:
        if key == CURRENT_MODEL:
            return (visit or self.new_visit()).chat.model
        if not isinstance(key, str) or key not in {name for _label, name in self.builtins}:
            raise Refusal(f"Unknown model {quote(key)}.")
        return self.shelf.get(key)
