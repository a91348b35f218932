"""What the training games of :mod:`kdlab.methods` share, a layer below them (methods never import each other).

``base`` (:class:`~kdlab.games.base.Method`, the :data:`~kdlab.games.base.METHODS` registry), the bases of
students (``classifier_student``, ``generator_student``), the GAN and image-to-image players, configs and
evaluations (``gan_config``, ``gan_players``, ``gan_eval``, ``i2i_players``, ``i2i_eval``,
``translation_teacher``), a classifier run's held-out evaluation (``evaluation``), the teacher-output cache
(``teacher_cache``), the synthesizer of generated transfer sets (``synthesizer``) and the expansion of a
config's per-player objectives (``objectives``). Nothing here is registered as a method.
"""
