"""Target codecs: encode keypoints into network targets and decode network outputs back to keypoints."""
