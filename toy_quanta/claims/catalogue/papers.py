"""The papers the claims come from, each with its entry in docs/references.md."""

from toy_quanta.claims.ledger import paper

MICHAUD = paper("michaud2023", "Michaud et al. 2023", "michaud-2023")
POWER = paper("power2022", "Power et al. 2022", "power-2022")
NANDA = paper("nanda2023", "Nanda et al. 2023", "nanda-2023")
LIU = paper("liu2022", "Liu et al. 2022", "liu-2022")
OMNIGROK = paper("liu2023", "Liu, Michaud and Tegmark 2023", "liu-2023")
GROKFAST = paper("lee2024", "Lee et al. 2024", "lee-2024")
PRIETO = paper("prieto2025", "Prieto et al. 2025", "prieto-2025")
THILAK = paper("thilak2022", "Thilak et al. 2022", "thilak-2022")
KUMAR = paper("kumar2023", "Kumar et al. 2023", "kumar-2023")
OLSSON = paper("olsson2022", "Olsson et al. 2022", "olsson-2022")
BARAK = paper("barak2022", "Barak et al. 2022", "barak-2022")
NAM = paper("nam2024", "Nam et al. 2024", "nam-2024")
