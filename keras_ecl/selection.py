"""Guided extracurricular inputs: draw several candidates per synthetic input, keep the best.

Random draws mostly land where teacher and student already agree. A
`Selection` draws `candidates` inputs for every synthetic slot and keeps the one
the student has most to learn from; scores that need the teacher reuse its
outputs for the kept inputs, so the extra cost is one forward pass over the
candidates that were not kept, of the student only or of the teacher too.
"""

import keras
import tensorflow as tf

from keras_ecl.utils import PACKAGE, check_integer, check_one_of

__all__ = ["SCORES", "Selection", "default_selection"]

# What a candidate is scored by, and which models score it.
SCORES = ("student_uncertainty", "teacher_uncertainty", "disagreement")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Selection:
    """Keeps, of `candidates` draws per synthetic input, the highest-scoring one.

    Scores (higher is kept):

    - `"student_uncertainty"`: the student's entropy (or variance) there. Only
        the student, which is usually far cheaper than the teacher, runs on the
        candidates; the teacher then runs on the kept inputs as usual.
    - `"teacher_uncertainty"`: the teacher's entropy (or variance); the teacher
        runs on all candidates and its outputs on the kept ones are reused.
    - `"disagreement"`: KL(teacher ‖ student), the distillation loss itself;
        both run on all candidates, the teacher's outputs are reused.

    Candidate `m` of synthetic input `s` is the sampler's output
    `m * slots + s`, so the kept inputs keep the sampler's layout (input
    `j * batch + i` drawn around real input `i`). Selection takes no gradient.

    Args:
        candidates: Draws per synthetic input, an integer >= 1 (1 keeps every
            draw: no selection). Defaults to 4.
        score: One of `SCORES`. Defaults to "student_uncertainty".
        measure: `"entropy"` or `"variance"` for the uncertainty scores.
            Defaults to "entropy".

    Example:

    ```python
    distiller = keras_ecl.Distiller(
        student, teacher, sampler="mixup",
        selection=keras_ecl.selection.Selection(candidates=4),
    )
    ```
    """

    def __init__(self, candidates=4, score="student_uncertainty", measure="entropy"):
        check_integer("candidates", candidates, 1)
        check_one_of("score", score, SCORES)
        check_one_of("measure", measure, ("entropy", "variance"))
        self.candidates = int(candidates)
        self.score = score
        self.measure = measure

    @property
    def runs_teacher(self):
        """Whether scoring runs the teacher on every candidate."""
        return self.score != "student_uncertainty"

    def select(self, drawn, slots, student, teacher, head, teacher_head=None):
        """Keeps the best of `candidates` draws for each of `slots` synthetic inputs.

        Args:
            drawn: `candidates * slots` inputs, candidate `m` of slot `s` at
                row `m * slots + s`.
            slots: The number of synthetic inputs to keep (a scalar tensor).
            student: The student `keras.Model`.
            teacher: The teacher `keras.Model`.
            head: The `keras_ecl.heads.Head` of the student.
            teacher_head: The head of the teacher's outputs, if not `head`
                (an ensemble's, `keras_ecl.teachers.EnsembleHead`).

        Returns:
            `(kept, teacher_outputs)`: the `slots` kept inputs, and the
                teacher's outputs on them if scoring ran the teacher, else None.
        """
        if self.candidates == 1:
            return drawn, None
        teacher_head = head if teacher_head is None else teacher_head
        teacher_outputs = teacher(drawn, training=False) if self.runs_teacher else None
        if self.score == "teacher_uncertainty":
            scores = teacher_head.uncertainty(teacher_outputs, self.measure)
        else:
            student_outputs = student(drawn, training=False)
            if self.score == "disagreement":
                scores = teacher_head.kl_divergence(teacher_outputs, student_outputs)
            else:
                scores = head.uncertainty(student_outputs, self.measure)
        scores = tf.reshape(tf.stop_gradient(scores), [self.candidates, slots])
        rows = tf.argmax(scores, axis=0, output_type=tf.int32) * slots + tf.range(slots)
        kept = tf.gather(drawn, rows)
        if teacher_outputs is not None:
            teacher_outputs = keras.tree.map_structure(
                lambda t: tf.gather(t, rows), teacher_outputs
            )
        return kept, teacher_outputs

    def get_config(self):
        return {"candidates": self.candidates, "score": self.score, "measure": self.measure}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Selection({args})"


def default_selection():
    """The selection of `keras_ecl.Distiller`'s default recipe for classification.

    The best of 4 draws by the student's entropy. Only the student, usually far
    cheaper than the teacher, runs on the extra candidates, so each of the
    teacher's passes goes to inputs the student is unsure about. Chosen on
    validation splits, see BENCHMARKS.md, "Choosing ECL's recipe".

    Returns:
        `Selection(candidates=4, score="student_uncertainty")`.

    Example:

    ```python
    keras_ecl.selection.default_selection().candidates  # 4
    ```
    """
    return Selection(candidates=4, score="student_uncertainty")
