"""Short texts for people that are not error messages, in one small catalogue.

The chat's answers come from jinja2 templates (``templates/``). What is left are short plain-text pieces that are not
Markdown: the chat's picture captions, clickable follow-up questions and model-menu labels. They live here as
``str.format`` patterns: rewording one is an edit to this table, not to the code that fills it in. Error messages stay
with the errors (see ``errors.py``).
"""

from __future__ import annotations

MESSAGES: dict[str, str] = {
    # The chat (explainer/chat): questions people can click (each must be understood by the chat's rules) ...
    "ask.what": "What is it?",
    "ask.why": "Why?",
    "ask.confidence": "How confident is it?",
    "ask.region": "Show the region",
    "ask.trust": "Does it hold up?",
    "ask.compare_classes": "Compare the top 3",
    "ask.second_guess": "Compare with the second guess",
    "ask.compare_methods": "Compare methods",
    "ask.layers": "Show layers",
    "ask.which_layer": "Which layer?",
    "ask.teach": "How does this work?",
    "ask.what_is_gradcam": "What is Grad-CAM?",
    "ask.help": "Help",
    "ask.first_image": "First image",
    "ask.wider_region": "Set threshold to 30 %",
    "ask.why_not": "Why not {label}?",
    "ask.what_about": "What about {label}?",
    "ask.explain": "Explain {label}",
    "ask.region_for": "Show the region for {label}",
    "ask.trust_for": "Does it hold up for {label}?",
    "ask.likely": "How likely is {label}?",
    "ask.use": "Use {name}",
    "ask.use_layer": "Use layer {name}",
    "ask.use_model": "Use the {name} model",
    "ask.with_method": "With {name}?",
    "ask.lower_threshold": "Lower the threshold",
    "ask.segment_with": "Segment with {name}",
    "ask.expected_example": "Is it looking at the lower left?",
    "ask.rather": "Why {label} rather than {other}?",
    "ask.against": "What speaks against {label}?",
    "ask.negative": "Show the negative evidence",
    "ask.what_if_highlighted": "What if I hide the highlighted region?",
    "ask.what_if_example": "What if I cover the top left?",
    "ask.what_if_keep": "What if I keep only the centre?",
    "ask.what_if_fill": "What if I cover it with the mean colour?",
    "ask.legend": "What do the colours mean?",
    # ... captions under its pictures (plain text) ...
    "caption.what": "Top {count} classes of {model} on image {image}",
    "caption.what_findings": "Top {count} findings of {model} on image {image}",
    "caption.overlay": "{method} for {label} ({probability:.1%}) · image {image}",
    "caption.scored": "{label} ({probability:.1%})",
    "caption.pair": "{method}: {top} vs {asked}",
    "caption.region": "{label} segmented by {segmenter}: outline and box",
    "caption.region_heat": "Where the evidence for {label} would be (threshold {threshold:.0%}); no mask",
    "caption.cutout": "{label} cut out (PNG, transparent outside the mask)",
    "caption.trust_original": "{label} {probability:.1%}",
    "caption.trust_hidden": "box hidden: {probability:.1%}",
    "caption.trust_random": "random box: {probability:.1%}",
    "caption.trust": "What the model saw: image, highlighted box hidden, a random box hidden ({label})",
    "caption.ranked": "{rank}. {label} ({probability:.1%})",
    "caption.compare_classes": "{method} maps of the top {count} classes",
    "caption.compare_findings": "{method} maps of the top {count} findings",
    "caption.method_auc": "{method} · deletion {auc:.2f}",
    "caption.compare_methods": "{count} methods for {label} on image {image}",
    "caption.layer": "{name} ({shape})",
    "caption.layers": "{method} for {label} at {count} depths",
    "caption.layer_stage": "{stage} ({grid} patches × {dim})",
    "caption.setting": "{setting} = {value}",
    "caption.contrast": "{method}: {label} rather than {other} · image {image}",
    "caption.against": "{method}: what speaks against {label} · image {image}",
    "caption.what_if": "{label}: the image, and covered ({fill}) · image {image}",
    "caption.what_if_before": "{label} {probability:.1%} · the box to cover",
    "caption.what_if_after": "covered ({fill}): {label} {probability:.1%}",
    "caption.legend": "The {colormap} colour scale: from no evidence to the map's maximum",
    "caption.expected": "{method} for {label} ({probability:.1%}) · magenta: your region · image {image}",
    # ... the stages of a vision transformer, as the chat names its layers (block counted from 1) ...
    "layer.embeddings": "embeddings",
    "layer.block": "block {block}",
    "layer.attention_norm": "block {block}, before its attention",
    # ... the model menu ...
    "menu.default": "{label} · default",
    "menu.imagenet": "{name} (ImageNet)",
    "menu.imagenet_download": "{name} (ImageNet, downloads on first use)",
    "menu.shapes": "shapes (demo)",
    "menu.shapes-shortcut": "shapes-shortcut (demo: right for the wrong reason)",
    "menu.uploaded": "{stem} (uploaded)",
    "menu.uploaded_again": "{stem} ({number}, uploaded)",
    "menu.hub_empty": "Type a Hugging Face model id first, like hf://owner/repo.",
    "menu.hub_malformed": "{value} is not a Hugging Face model id: write hf://owner/repo.",
    "menu.hub_too_big": "That model would download {size:.0f} MB; this server takes at most {limit:.0f} MB.",
    "default_model.failed": "{name} could not be loaded ({error}); using {fallback}.",
    # ... and the last resorts.
    "chat.upload_unnamed": "the upload",
    "chat.apology": "Sorry, something went wrong on my side while answering. Please try again or ask something else.",
}


def message(key: str, **fields: object) -> str:
    """The catalogue's sentence ``key`` with ``fields`` filled in.

    Parameters
    ----------
    key : str
        A key of :data:`MESSAGES`.
    **fields
        The values its ``{placeholders}`` name; a missing one raises ``KeyError``.

    Returns
    -------
    str
        The sentence, plain text (the caller escapes it for Markdown or HTML).
    """
    return MESSAGES[key].format(**fields)
