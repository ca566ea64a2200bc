"""The names of the datasets the package knows: the TU collection and OGB's molecule datasets
(no torch import: the CLI's configs read them)."""

#: datasets whose official archive ships inside the package
BUNDLED = ("ENZYMES", "PROTEINS", "MUTAG")

#: graph-classification datasets of the TU collection (https://chrsmrrs.github.io/datasets/),
#: as it spells them: a name is matched against these without regard to case, and a typo of
#: one is caught before a download is attempted. Any other name works from offline files, or
#: with ``download=True``. Each is a ``data`` option of ``diffpool-train`` (lower case).
KNOWN = (
    "AIDS", "BZR", "BZR_MD", "COIL-DEL", "COIL-RAG", "COLLAB", "COX2", "COX2_MD", "Cuneiform",
    "DD", "DHFR", "DHFR_MD", "ENZYMES", "ER_MD", "FIRSTMM_DB", "FRANKENSTEIN", "Fingerprint",
    "IMDB-BINARY", "IMDB-MULTI", "KKI", "Letter-high", "Letter-low", "Letter-med", "MSRC_21",
    "MSRC_21C", "MSRC_9", "MUTAG", "Mutagenicity", "NCI1", "NCI109", "OHSU", "PROTEINS",
    "PROTEINS_full", "PTC_FM", "PTC_FR", "PTC_MM", "PTC_MR", "Peking_1", "REDDIT-BINARY",
    "REDDIT-MULTI-12K", "REDDIT-MULTI-5K", "SYNTHETIC", "SYNTHETICnew", "Synthie", "TRIANGLES",
    "deezer_ego_nets", "github_stargazers", "reddit_threads", "twitch_egos",
)  # fmt: skip

#: OGB's molecule graph-property datasets (atom and bond features, OGB's split and evaluator):
#: each is a ``data`` option of ``diffpool-train`` (``data=ogbg-molhiv``), the generic
#: ``data/ogbg.yaml`` with that name
OGB_MOLECULES = (
    "ogbg-molbace", "ogbg-molbbbp", "ogbg-molclintox", "ogbg-molesol", "ogbg-molfreesolv",
    "ogbg-molhiv", "ogbg-mollipo", "ogbg-molmuv", "ogbg-molpcba", "ogbg-molsider",
    "ogbg-moltox21", "ogbg-moltoxcast",
)  # fmt: skip
