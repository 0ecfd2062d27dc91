"""Readers of dataset annotation formats; each returns `posekit.data.sample.Sample`s."""
