"""Default class maps: raw label -> class name (None: left out on purpose). Tables, not code: a
study overrides one with `class_map:` in its dataset entry. The class order of a table is the order
of first appearance of its names."""
from __future__ import annotations

SYNTHDERM = {"nevus": "nevus", "melanoma": "melanoma", "other": "other"}

# HAM10000 `dx`, in the MedMNIST (DermaMNIST) label order.
HAM10000 = {"akiec": "akiec", "bcc": "bcc", "bkl": "bkl", "df": "df", "mel": "mel", "nv": "nv",
            "vasc": "vasc"}

# Paper 002's three classes (benign nevi, melanoma, others) from the ISIC archive `diagnosis`.
# Missing diagnoses and indeterminate melanocytic proliferations have no class: left out.
ISIC = {
    "nevus": "nevus",
    "melanoma": "melanoma",
    **{dx: "other" for dx in (
        "basal cell carcinoma", "squamous cell carcinoma", "seborrheic keratosis", "actinic keratosis",
        "pigmented benign keratosis", "lichenoid keratosis", "solar lentigo", "lentigo NOS",
        "lentigo simplex", "dermatofibroma", "vascular lesion", "angioma", "angiokeratoma",
        "acrochordon", "verruca", "cafe-au-lait macule", "scar", "neurofibroma",
        "clear cell acanthoma", "mucosal melanotic macule", "pyogenic granuloma", "other")},
    "atypical melanocytic proliferation": None,
    "AIMP": None,
    "": None,
}

# PAD-UFES-20 `diagnostic`, onto the same three classes (paper 002's OOD test set).
PAD_UFES_20 = {"NEV": "nevus", "MEL": "melanoma", "ACK": "other", "BCC": "other", "SCC": "other",
               "SEK": "other"}

CAMELYON17 = {"0": "normal", "1": "tumor"}

CIFAR10 = {str(i): name for i, name in enumerate(
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))}


def _indexed(*names: str) -> dict[str, str]:
    return {str(i): n for i, n in enumerate(names)}


# MedMNIST 2D sets (single-label), keyed by the file's flag (`pneumoniamnist_64.npz` -> pneumoniamnist);
# label names from MedMNIST's `medmnist/info.py`.
_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")
MEDMNIST = {
    "pathmnist": _indexed("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                          "normal colon mucosa", "cancer-associated stroma",
                          "colorectal adenocarcinoma epithelium"),
    "dermamnist": _indexed("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                           "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                           "melanocytic nevi", "vascular lesions"),
    "octmnist": _indexed("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": _indexed("normal", "pneumonia"),
    "retinamnist": _indexed("0", "1", "2", "3", "4"),
    "breastmnist": _indexed("malignant", "normal, benign"),
    "bloodmnist": _indexed("basophil", "eosinophil", "erythroblast",
                           "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                           "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "tissuemnist": _indexed("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                            "Glomerular endothelial cells", "Interstitial endothelial cells",
                            "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                            "Thick Ascending Limb"),
    "organamnist": _indexed(*_ORGANS),
    "organcmnist": _indexed(*_ORGANS),
    "organsmnist": _indexed(*_ORGANS),
}
