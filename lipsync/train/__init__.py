"""Training: the studio's own lip-sync expert and Wav2Lip generator, from its own footage.

* :mod:`lipsync.train.data` -- the on-disk training set (format and reader);
* :mod:`lipsync.train.dataset` -- building it from films with our shots, face tracks and ASD;
* :mod:`lipsync.train.sources` -- the films it is built from, each clip's character and the train / val split;
* :mod:`lipsync.train.expert` -- the expert lip-sync discriminator (SyncNet_color layout);
* :mod:`lipsync.train.wav2lip` -- generator training against the frozen expert (+ optional GAN);
* :mod:`lipsync.train.generator_sampler` -- the generator's training samples;
* :mod:`lipsync.train.fid` -- FID, LSE-D / LSE-C and L1 of a generator on a split;
* :mod:`lipsync.train.fid_inception` -- the pytorch-fid Inception network FID is measured with;
* :mod:`lipsync.train.film` -- fine-tuning on the film at hand (the flow's ``options.finetune``), cached.

No Prefect import here: the CLI (``dub train ...``) and the flows call this library.
"""
