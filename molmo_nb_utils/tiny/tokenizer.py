"""The tiny model's tokenizer and chat template: Molmo2's special tokens, ChatML, and the released template.

A byte-level BPE trained in memory on a few lines in the style of Molmo2's answers, so the tokens a
prompt costs and the grounding grammar behave as in the released tokenizer.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["CHATML_TOKENS", "CHAT_TEMPLATE", "MEDIA_TOKENS", "build_tokenizer"]

# Molmo2's special tokens, in the order the released checkpoints number them.
MEDIA_TOKENS = [
    "<im_start>",
    "<im_end>",
    "<im_patch>",
    "<im_col>",
    "<low_res_im_start>",
    "<|image|>",
    "<im_low>",
    "<frame_start>",
    "<frame_end>",
    "<|video|>",
]
CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# The released template's behaviour (allenai/Molmo2-4B, rendered by apply_chat_template), written
# anew: every image and video placeholder first, before any turn ("<|image|>" for one image,
# "Image 1<|image|>Image 2<|image|>..." for several, then one "<|video|>" per video, counted over the
# whole conversation); a message's text items joined by one space; the first user turn
# "<|im_start|>user\n{text}<|im_end|>\n", an assistant turn " <|im_start|>assistant\n{text}" (leading
# space, no end marker), a later user turn opening with "<|im_end|>\n"; roles must alternate user,
# assistant, user, ... (no system turn), as in the released template.
CHAT_TEMPLATE = (
    "{%- set count = namespace(images=0, videos=0) -%}"
    "{%- for message in messages if message['content'] is not string -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set count.images = count.images + 1 -%}"
    "{%- elif item['type'] == 'video' -%}{%- set count.videos = count.videos + 1 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{%- if count.images == 1 -%}{{- '<|image|>' -}}"
    "{%- else -%}{%- for i in range(count.images) -%}{{- 'Image ' ~ (i + 1) ~ '<|image|>' -}}{%- endfor -%}"
    "{%- endif -%}"
    "{%- for i in range(count.videos) -%}{{- '<|video|>' -}}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] != ('user' if loop.index0 % 2 == 0 else 'assistant') -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if not loop.first -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{{- '<|im_start|>user\\n' + text + '<|im_end|>\\n' -}}"
    "{%- else -%}{{- ' <|im_start|>assistant\\n' + text -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# A few lines of text in the style of Molmo2's answers, so the byte-level BPE learns merges for
# words, digits and the grounding grammar. Its content does not matter beyond that.
_CORPUS = [
    "The image shows a cat sitting on a chair next to a cup of coffee.",
    "There are 24 coins on the table. Counting the coins shows a total of 24.",
    '<points coords="1 1 308 305 2 752 377">curb ramp</points>',
    '<points coords="1 1 555 169;2 3 649 154 4 709 162">boats</points>',
    '<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124">player</tracks>',
    "In the video, a person walks to the left and then a dog runs across the road.",
    "Image 1 and Image 2 show the same motorcycle from the left and from the right.",
    "0123456789 0.5 1.0 1.5 2.0 2.5 3.0 ; , : user assistant system",
    "What is happening in this video? Point to the penguins. How many birds are there?",
]


def build_tokenizer():
    """A byte-level BPE trained in memory, with ChatML and Molmo2's media tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=CHATML_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
    )
    text_vocab = len(fast)
    fast.add_special_tokens({"additional_special_tokens": MEDIA_TOKENS})
    return fast, text_vocab
