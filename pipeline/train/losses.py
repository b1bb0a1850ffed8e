"""open_clip's contrastive loss, extended to batches where a text can describe several images.

A partial description such as "a star" describes every image in the batch with a star. Plain CLIP
loss treats all of those but one as negatives and so teaches the model to *avoid* the star in
the others. :class:`MultiPositiveClipLoss` takes a (texts x images) boolean matrix of which text
describes which image and uses the uniform distribution over each row's (and each column's)
positives as the target of the cross-entropy. With one positive per row, on the diagonal, it is
exactly open_clip's :class:`~open_clip.loss.ClipLoss`.
"""

from __future__ import annotations

import torch
from open_clip.loss import ClipLoss


def soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    target = positives.float()
    target = target / target.sum(dim=1, keepdim=True)
    return -(target * logits.float().log_softmax(dim=1)).sum(dim=1).mean()


class MultiPositiveClipLoss(ClipLoss):
    """``ClipLoss`` with an optional ``positives`` matrix (texts x images); single process only."""

    def forward(  # type: ignore[override]
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        positives: torch.Tensor | None = None,
        logit_bias: torch.Tensor | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        if positives is None:
            return super().forward(image_features, text_features, logit_scale, logit_bias, output_dict)
        if self.world_size > 1:
            raise NotImplementedError("MultiPositiveClipLoss: positives are only supported in a single process")
        n_texts, n_images = text_features.shape[0], image_features.shape[0]
        if positives.shape != (n_texts, n_images):
            raise ValueError(
                f"positives: shape {tuple(positives.shape)} is not (texts, images) = {(n_texts, n_images)}"
            )
        positives = positives.to(image_features.device)
        if not bool(positives.any(dim=1).all()) or not bool(positives.any(dim=0).all()):
            raise ValueError("positives: every text and every image needs at least one positive")
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale, logit_bias)
        total = (soft_cross_entropy(logits_per_text, positives) + soft_cross_entropy(logits_per_image, positives.T)) / 2
        return {"contrastive_loss": total} if output_dict else total
