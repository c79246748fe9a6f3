"""(alpha_N, alpha_D) measured by other scaling studies, as listed by Michaud et al. (2023)."""

OTHER_STUDIES: dict[str, list[tuple[float, float]]] = {
    "Kaplan et al.": [(0.076, 0.095)],
    "Hoffmann et al. (Chinchilla)": [(0.34, 0.28)],
    "Droppo & Elibol": [(0.016, 0.019)],
    "Gordon et al. (translation)": [(0.11, 0.38), (0.13, 0.35), (0.12, 0.43)],
    "Rosenfeld et al. (nine tasks)": [(0.81, 0.34), (1.01, 0.22), (0.74, 0.56), (0.75, 0.61), (0.66, 0.53),
                                      (0.70, 0.51), (0.40, 1.16), (1.10, 0.83), (0.93, 0.54)],
}
