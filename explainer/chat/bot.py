"""The conversation: read a message, answer it, and never let a failure end the chat.

:class:`ChatSession` is what the app talks to. It owns the turn (uploads first, then the question), the choice of
answer (:mod:`explainer.chat.questions`), the slow-answer notes, model switches, and the error → reply handling;
everything it remembers lives in its :class:`~explainer.chat.session.SessionState`, which the answers read and fill.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from explainer.cams import METHODS
from explainer.chat import answers, answers_next
from explainer.chat import intents as I
from explainer.chat.intents import Intent, Vocab
from explainer.chat.messages import message
from explainer.chat.questions import QUESTIONS, parse
from explainer.chat.reply import Reply
from explainer.chat.session import ImageEntry, ModelLoader, SessionState, SettingError, Settings
from explainer.errors import ExplainerError, ImageError
from explainer.inputs.images import display_name
from explainer.layers import usable_layers
from explainer.models.loading import LoadedModel
from explainer.prose import render
from explainer.region import mask_to_rle
from explainer.render import COLORMAPS

logger = logging.getLogger(__name__)


class ChatSession:
    """One conversation, the entry point of the chat: :meth:`respond`.

    The parameters (``model``, ``loader``, ``model_names``, ``settings``) are those of :class:`SessionState`, which
    keeps them.

    Attributes
    ----------
    state : SessionState
        Everything the conversation remembers (images, settings, caches); ``model``, ``model_names``,
        ``settings``, ``current`` and ``images`` read it.
    """

    def __init__(self, model: LoadedModel, loader: ModelLoader | None = None, model_names: Sequence[str] = (),
                 settings: Settings | None = None):
        self.state = SessionState(model, loader, model_names, settings)
        self._known: dict[str, dict] = {}  # image file -> what is known about it (see know)

    # ----------------------------------------------------------------------------------------- reading the state

    @property
    def model(self) -> LoadedModel:
        return self.state.model

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.state.model_names

    @model_names.setter
    def model_names(self, names: Sequence[str]) -> None:
        """The app's model menu changed (an upload came or went)."""
        self.state.model_names = tuple(names)

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def current(self) -> ImageEntry | None:
        return self.state.current

    @property
    def images(self) -> list[ImageEntry]:
        return self.state.images

    def set_model(self, model: LoadedModel) -> None:
        """Answer with ``model`` from now on (see :meth:`SessionState.set_model`)."""
        self.state.set_model(model)

    def forget_model(self, model: LoadedModel, fallback: LoadedModel) -> bool:
        """Let go of ``model``; answer with ``fallback`` if it was answering (see :meth:`SessionState.forget_model`)."""
        return self.state.forget_model(model, fallback)

    def update_settings(self, **changes: Any) -> Settings:
        """Change settings; :class:`SettingError` for values out of range (see :meth:`SessionState.update_settings`)."""
        return self.state.update_settings(**changes)

    # ------------------------------------------------------------------------------------------------- turns

    def respond(self, text: str | None = "", files: Sequence[Any] = (), region: Region = None) -> Reply:
        """Answer one message: ``text`` (may be empty) plus uploaded ``files`` (may be empty), and perhaps a region.

        Parameters
        ----------
        text : str
            The user's message, any length (only the start is read), any characters.
        files : sequence
            Image file paths (or ``{"path": ...}`` dicts, PIL images, arrays). Each becomes a new image of the
            conversation; the last one is the current image. With a message that calls it a mask ("here is the
            mask", "mask of the lesion", "the expected region"), the last file is instead the mask of the region
            the evidence should be in, on the current image (see ``region``).
        region : str or numpy.ndarray, optional
            Where the user expects the evidence on the current image (after adding ``files``): a typed box
            (``"40, 60, 80, 80"`` as x, y, w, h; corners ``"x1,y1,x2,y2 = 10,10,50,50"`` when the text says so) or
            place words (``"lower left"``); or a mask array (H×W or H×W×C, any size with the image's proportions,
            any dtype: the non-zero or bright part; an RGBA brush layer: where not fully transparent), resized to the
            image.
            Given, the answer is "is it looking here?" (intent ``expected``) whatever the text says; the text may
            add a class ("for square") or a method ("with gradcam++"). A blank string counts as no region.

        Returns
        -------
        Reply
            Never raises: a bad image, an unknown class, an unusable region or any other :class:`ExplainerError`
            becomes a friendly reply (``reply.error`` set), and an unexpected exception becomes an apology (and a
            log entry). The conversation state survives both: a bad region leaves the images and the current image
            as they were.
        """
        started = time.perf_counter()
        files = list(files or ())
        with self.state.lock:
            self.state.turns += 1
            reply = self._safely(lambda: self._turn(text or "", files, region),
                                 "chat turn failed (text=%r, %d files)", (text or "")[:200], len(files))
            reply.data.setdefault("elapsed_ms", round(1000 * (time.perf_counter() - started), 2))
            self._remember(reply)
            return reply

    def progress_note(self, text: str | None) -> str | None:
        """A line to show while a slow answer (trust check, method comparison, layers, a slow method) is computed."""
        method = METHODS[self.state.method]
        note = render("progress", intent=parse(text or "").name, method=method.display_name,
                      method_slow=method.slow, slow=[m.display_name for m in METHODS.values() if m.slow],
                      n_methods=len(METHODS)).strip()
        return note or None

    def switch_model(self, model: LoadedModel) -> Reply:
        """:meth:`set_model`, then a reply saying so: the current image explained by the new model, or the model's
        description when there is no image yet (for the app's model picker)."""
        with self.state.lock:
            self.state.set_model(model)
            if self.state.current is None:
                reply = self._safely(lambda: answers.answer_model(self.state, Intent(I.MODEL)),
                                     "answer after a model switch failed")
            else:
                reply = self._safely(lambda: answers.answer_why(self.state, Intent(I.MODEL), header="model"),
                                     "answer after a model switch failed")
            return self._remember(reply)

    def change_setting(self, name: str, value: Any) -> Reply:
        """A setting changed outside the conversation (the app's settings panel): applied, and said in a reply that
        redraws the current picture when the setting affects it. A refused value is an error reply, nothing changes.
        """
        with self.state.lock:
            intent = Intent(I.SETTING, text=f"{name} = {value}", setting=name, value=value)
            return self._remember(self._safely(lambda: answers.answer_setting(self.state, intent),
                                               "answer to a settings change failed"))

    def _remember(self, reply: Reply) -> Reply:
        """Note which question was answered (follow-ups depend on it); problems leave the last answer as it was."""
        if not reply.error:
            self.state.last_answer = reply.intent
        return reply

    def refuse(self, err: ExplainerError) -> Reply:
        """The reply for input refused before this conversation saw it (e.g. a file that was not uploaded)."""
        return answers.error_reply(self.state, err)

    def _safely(self, answer: Any, log_message: str, *log_args: Any) -> Reply:
        """``answer()``, with an :class:`ExplainerError` as its friendly reply and any other failure as an apology."""
        try:
            return answer()
        except ExplainerError as err:
            return answers.error_reply(self.state, err)
        except Exception:  # never let a bug end the conversation
            logger.exception(log_message, *log_args)
            return answers.apology_reply(self.state)

    def _turn(self, text: str, files: list, region: Region) -> Reply:
        """Add the uploaded images, read the message and answer it. Notes the image loader made about a new upload
        (e.g. which frame of a multi-frame DICOM file is explained) open the answer, whatever the question was."""
        if isinstance(region, str) and not region.strip():
            region = None
        typed = parse(text, vocab(self.state)) if files and region is None else None
        if region is not None:
            reply, added = self._region_turn(text, files, region)
        elif typed is not None and typed.name == I.EXPECTED and typed.region:  # a new image and a box for it
            reply, added = self._region_turn(text, files, typed.region)
        elif files and I.names_mask(text):
            reply, added = self._region_turn(text, files[:-1], files[-1], mask_file=True)
        else:
            added, problems = self._add_images(files)
            reply = self._answer(text, added, problems)
        noted = [{"number": e.number, "notes": list(e.notes)} for e in added if e.notes]
        if noted:
            reply.markdown = render("image_notes", entries=noted) + "\n\n" + reply.markdown
            reply.data["image_notes"] = noted
        return reply

    def _region_turn(self, text: str, files: list, region: Any, mask_file: bool = False) -> tuple[Reply, list]:
        """"Is it looking here?" with a region given beside the message (or a mask uploaded with it), on the
        current image after adding ``files``. An unusable region undoes the turn's uploads and says why."""
        state = self.state
        checkpoint = state.checkpoint()
        added, problems = self._add_images(files)
        intent = parse(text, vocab(state))
        if problems:
            return answers.bad_image_reply(state, problems, added), added
        if state.current is None:
            return answers.no_image_reply(state, intent), added
        try:
            if isinstance(region, str) and not mask_file:
                expected = answers.expected_from_text(state, region)
            else:
                expected = answers.expected_from_mask(state, region)
        except ExplainerError as err:
            state.restore(checkpoint)
            return answers.error_reply(state, err, intent), []
        state.set_expected(expected)
        asked = dataclasses.replace(intent, name=I.EXPECTED, region=None)
        return answers.answer_expected(state, asked, header="mask" if mask_file else None), added

    def _answer(self, text: str, added: list[ImageEntry], problems: list[tuple[str, str]]) -> Reply:
        state = self.state
        intent = parse(text, vocab(state))
        if problems:
            return answers.bad_image_reply(state, problems, added)
        if added and (intent.name in (I.UNKNOWN, I.GREETING, I.IMAGE) or not text.strip()):
            return answers.answer_why(state, Intent(I.WHY, text=intent.text), header="new_image")
        if not text.strip():
            return answers.no_image_reply(state) if state.current is None else answers.answer_help(state, intent)
        if intent.image_ref and not added:
            entry = state.find_image(intent.image_ref)
            if entry is None:
                return answers.no_such_image_reply(state, intent)
            state.current = entry
        question = QUESTIONS[intent.name]
        if question.needs_image and state.current is None:
            return answers.no_image_reply(state, intent)
        if _follows_expected(state, intent):
            return answers.answer_expected_follow_up(state, intent)
        if state.current is not None and (again := answers_next.what_if_again(state, intent)) is not None:
            return answers_next.answer_what_if(state, again)  # "and with the box at 30, 30, 40, 40?"
        return question.answer(state, intent)

    def know(self, source: str, **facts: Any) -> None:
        """What is known about the image file ``source`` when it is sent (a bundled example: the class it shows,
        where its shortcut tag is), so answers can tell faithful from right for the right reason."""
        self._known[str(source)] = facts

    def _add_images(self, files: list) -> tuple[list[ImageEntry], list[tuple[str, str]]]:
        added, problems = [], []
        for source in files:
            try:
                entry = self.state.add_image(source)
                entry.known = dict(self._known.get(str(source), {})) if isinstance(source, str) else {}
                added.append(entry)
            except ImageError as err:
                problems.append((_file_name(source), str(err)))
        return added, problems

    def __deepcopy__(self, memo: dict) -> ChatSession:
        """An independent conversation sharing the (read-only) models: Gradio deep-copies a State's value."""
        twin = ChatSession.__new__(ChatSession)
        twin.state = copy.deepcopy(self.state, memo)
        twin._known = copy.deepcopy(self._known, memo)
        return twin


#: What :meth:`ChatSession.respond` takes as the expected region: typed text, a mask array, or nothing.
Region = str | np.ndarray | None


def _follows_expected(state: SessionState, intent: Intent) -> bool:
    """True when ``intent`` asks the last "is it looking here?" again for another class ("and for square?"),
    method ("with Grad-CAM++?") or setting ("lower the threshold"), on the image whose region is remembered."""
    if state.last_answer != I.EXPECTED or state.expected_region() is None:
        return False
    if intent.name == I.CLASS:
        return bool(intent.target)
    if intent.name == I.USE_METHOD:
        return intent.method is not None
    return intent.name == I.SETTING and intent.setting in _REDRAWN and intent.value is not None


#: Settings whose change redraws or re-measures an "is it looking here?" answer.
_REDRAWN = ("threshold", "opacity", "colormap")


def _file_name(source: Any) -> str:
    """How a message may call an upload: its file name, but never a DICOM file's (often the patient's name)."""
    path = source.get("path") if isinstance(source, dict) else source
    return display_name(path) if isinstance(path, str) else message("chat.upload_unnamed")


def vocab(state: SessionState) -> Vocab:
    """What messages may name in this conversation (cached per model)."""
    return state.model_fact(("vocab", state.model_names), lambda: Vocab(
        labels=tuple(state.model.labels), layers=tuple(p.name for p in usable_layers(state.layer_paths())),
        models=state.model_names, colormaps=tuple(COLORMAPS)))


def answer_once(model: LoadedModel, image: Any, question: str = "", region: Region = None,
                **settings: Any) -> Reply:
    """Answer ``question`` about ``image`` with ``model`` in a fresh, throw-away conversation.

    Parameters
    ----------
    model : LoadedModel
        The model to ask.
    image : path, PIL image or array
        The image (``None`` gives the "please upload an image" reply).
    question : str
        Any question the chat understands; empty means "why?" (top-class explanation with overlay).
    region : str or numpy.ndarray, optional
        Where the evidence should be (see :meth:`ChatSession.respond`): given, the answer is "is it looking
        here?" (intent ``expected``, numbers in ``reply.data["expected"]``).
    **settings :
        Initial :class:`Settings` fields (``method``, ``layer``, ``opacity``, ``colormap``, ``threshold``,
        ``top_k``); an invalid value gives an error reply.

    Returns
    -------
    Reply
        ``reply.image`` is the main picture (the overlay for "why?"), ``reply.data`` the JSON facts; with them,
        ``reply.data["mask"]``, the segmented mask of the class the answer explains as COCO run-length encoding
        (:func:`explainer.region.mask_to_rle`; None when the class is below the segmentation cutoff).
    """
    chat = ChatSession(model)
    if settings:
        try:
            chat.update_settings(**settings)
        except SettingError as err:
            return chat.refuse(err)
    reply = chat.respond(question or "", [] if image is None else [image], region=region)
    about = reply.data.get("explanation")
    if about and not reply.error and chat.state.current is not None:  # the answer's own (cached) explanation
        result = chat.state.explanation(about["target"]["index"], about["method"])
        reply.data["mask"] = mask_to_rle(result.region.mask)
    return reply
