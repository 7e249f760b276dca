"""ESC-50's 50 classes, in the dataset's target order, and its 5 major categories.

This is the one place that holds these names; everything else indexes into CLASS_NAMES.
"""

CATEGORIES = (
    "animals",
    "natural soundscapes",
    "human non-speech",
    "interior/domestic",
    "exterior/urban",
)

# target index -> class name; ESC-50 orders classes so that each category is a run of 10 targets.
CLASS_NAMES = (
    # animals
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    # natural soundscapes & water sounds
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds",
    "water_drops", "wind", "pouring_water", "toilet_flush", "thunderstorm",
    # human, non-speech sounds
    "crying_baby", "sneezing", "clapping", "breathing", "coughing",
    "footsteps", "laughing", "brushing_teeth", "snoring", "drinking_sipping",
    # interior/domestic sounds
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    # exterior/urban noises
    "helicopter", "chainsaw", "siren", "car_horn", "engine",
    "train", "church_bells", "airplane", "fireworks", "hand_saw",
)

NUM_CLASSES = len(CLASS_NAMES)
CLASSES_PER_CATEGORY = NUM_CLASSES // len(CATEGORIES)


def category_of(target: int) -> str:
    """The ESC-50 category of a class index (0..49)."""
    return CATEGORIES[target // CLASSES_PER_CATEGORY]


def category_index(target: int) -> int:
    return target // CLASSES_PER_CATEGORY
