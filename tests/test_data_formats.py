"""The format adapters on real data where `../shared/data` has it (HAM10000, MedMNIST) and on small
fixtures in the exact published layout where it does not (ISIC, PAD-UFES-20, Camelyon17-WILDS,
CIFAR-10, ImageFolder). The `write_*` builders are reused by the bad-input tests."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnsweep.data import DataError, DatasetSpec
from attnsweep.data.adapters import adapter

SHARED = Path(__file__).parents[2] / "shared" / "data"
HAM = SHARED / "ham10000"
MEDMNIST = SHARED / "medmnist"
needs_ham = pytest.mark.skipif(not (HAM / "HAM10000_metadata.csv").is_file(),
                               reason=f"real HAM10000 data not found at {HAM}")
needs_medmnist = pytest.mark.skipif(not (MEDMNIST / "pneumoniamnist.npz").is_file(),
                                    reason=f"real MedMNIST files not found at {MEDMNIST}")


def read(fmt: str, root: Path, **kw):
    spec = DatasetSpec(format=fmt, root=root, **kw)
    return adapter(fmt).read(spec)


def decode_all(fmt: str, root: Path, records, size: int = 16, **kw) -> np.ndarray:
    spec = DatasetSpec(format=fmt, root=root, **kw)
    return np.concatenate(list(adapter(fmt).images(spec, records, size, 1)))


def write_image(path: Path, seed: int, size=(20, 15)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


# ---- fixtures in the published layouts -------------------------------------------------------

def copy_ham_sample(root: Path) -> Path:
    """The real 35-image sample, laid out like the published download: the metadata CSV beside
    HAM10000_images_part_1/ and HAM10000_images_part_2/."""
    src = HAM / "sample"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "HAM10000_metadata_sample.csv", root / "HAM10000_metadata.csv")
    for i, img in enumerate(sorted((src / "images_200x150").glob("*.jpg"))):
        dest = root / f"HAM10000_images_part_{1 + i % 2}" / img.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(img, dest)
    return root


ISIC_HEADER = ("isic_id,attribution,copyright_license,age_approx,anatom_site_general,benign_malignant,"
               "diagnosis,diagnosis_confirm_type,lesion_id,patient_id,sex")
ISIC_ROWS = [  # (diagnosis, lesion, patient)
    ("nevus", "IL_1", "IP_1"), ("nevus", "IL_1", "IP_1"), ("nevus", "IL_2", ""), ("melanoma", "IL_3", "IP_2"),
    ("melanoma", "IL_4", "IP_3"), ("basal cell carcinoma", "IL_5", "IP_4"), ("seborrheic keratosis", "", ""),
    ("", "IL_6", "IP_5"), ("atypical melanocytic proliferation", "IL_7", "IP_6"), ("actinic keratosis", "IL_8", "IP_2"),
]


def write_isic(root: Path, rows=ISIC_ROWS) -> Path:
    lines = [ISIC_HEADER]
    for i, (dx, lesion, patient) in enumerate(rows):
        lines.append(f"ISIC_{i:07d},Hospital {i % 2},CC-BY,{40 + i},lower extremity,benign,{dx},"
                     f"histopathology,{lesion},{patient},{'male' if i % 2 else 'female'}")
        write_image(root / f"ISIC_{i:07d}.jpg", i)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


PAD_HEADER = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
              "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,"
              "diameter_1,diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed")


def write_pad(root: Path, diagnostics=("NEV", "NEV", "MEL", "MEL", "BCC", "ACK", "SCC", "SEK")) -> Path:
    lines = [PAD_HEADER]
    for i, dx in enumerate(diagnostics):
        patient, lesion = f"PAT_{i // 2}", 100 + i
        img = f"{patient}_{lesion}_{i}.png"
        lines.append(f"{patient},{lesion},False,False,POMERANIA,POMERANIA,{50 + i},False,"
                     f"{'MALE' if i % 2 else 'FEMALE'},True,True,True,True,{1 + i % 4}.0,NECK,6.0,5.0,{dx},"
                     f"True,True,False,True,True,True,{img},True")
        write_image(root / "images" / f"imgs_part_{1 + i % 3}" / img, i)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def write_camelyon(root: Path) -> Path:
    """camelyon17_v1.0/: two patients per hospital 0..4, two patches each (tumor 0 and 1)."""
    lines = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    i = 0
    for center in range(5):
        for p in range(2):
            patient, node = f"{center * 10 + p:03d}", p % 5
            for tumor in (0, 1):
                x, y = 3328 + 96 * tumor, 21792 + 96 * p
                folder = f"patient_{patient}_node_{node}"
                write_image(root / "patches" / folder / f"patch_{folder}_x_{x}_y_{y}.png", i, (12, 12))
                lines.append(f"{i},{patient},{node},{x},{y},{tumor},{center * 10 + p},{center},{i % 2}")
                i += 1
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def write_cifar(root: Path, per_batch: int = 20) -> Path:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta, pickled with bytes keys."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in np.arange(per_batch) % 10],
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                             b"horse", b"ship", b"truck"], b"num_cases_per_batch": per_batch}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_imagefolder(root: Path, classes=("normal", "pneumonia"), per_class: int = 4) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"person{i // 2}_{name}_{i}.jpeg", c * 10 + i)
    return root


# ---- tests -----------------------------------------------------------------------------------

@needs_ham
def test_ham10000_published_layout(tmp_path):
    root = copy_ham_sample(tmp_path / "ham")
    rec, classes = read("ham10000", root)
    assert classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert len(rec) == 35 and (rec["label"].value_counts() == 5).all()
    assert rec["group"].nunique() == 34  # two sample images share a lesion_id
    assert rec["group"].equals(rec["lesion"])
    row = rec[rec["image_id"] == "ISIC_0024310"].iloc[0]  # PROVENANCE: HAM_0003350, mel, 60, male, chest
    expect = ("HAM_0003350", "mel", 60.0, "male", "chest")
    assert (row["lesion"], row["label"], row["age"], row["sex"], row["site"]) == expect
    assert row["ref"].startswith("HAM10000_images_part_")
    imgs = decode_all("ham10000", root, rec, size=24)
    assert imgs.shape == (35, 24, 24, 3) and imgs.std() > 10


@needs_ham
def test_ham10000_both_metadata_versions_on_the_real_images():
    kaggle, _ = read("ham10000", HAM)
    dataverse, _ = read("ham10000", HAM, metadata="HAM10000_metadata_dataverse.csv")  # CRLF, + `dataset`
    assert len(kaggle) == len(dataverse) == 10015
    assert kaggle["group"].nunique() == 7470
    assert kaggle["label"].value_counts().to_dict() == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514,
                                                        "akiec": 327, "vasc": 142, "df": 115}
    assert (kaggle["hospital"] == "").all()
    assert dataverse["hospital"].value_counts().to_dict() == {"vidir_molemax": 3954, "vidir_modern": 3363,
                                                             "rosendahl": 2259, "vienna_dias": 439}
    assert kaggle["age"].isna().sum() == 57


def test_ham10000_lesion_fraction_keeps_whole_lesions_of_a_seeded_share():
    full, _ = read("ham10000", HAM)
    part, classes = read("ham10000", HAM, options={"lesion_fraction": 0.2, "subset_seed": 0})
    assert part["group"].nunique() == round(0.2 * 7470) and len(classes) == 7
    kept = full[full["group"].isin(set(part["group"]))]
    assert sorted(part["ref"]) == sorted(kept["ref"])  # every image of a kept lesion, nothing else
    again, _ = read("ham10000", HAM, options={"lesion_fraction": 0.2, "subset_seed": 0})
    other, _ = read("ham10000", HAM, options={"lesion_fraction": 0.2, "subset_seed": 1})
    assert list(again["ref"]) == list(part["ref"]) and set(other["group"]) != set(part["group"])
    with pytest.raises(ValueError, match="lesion_fraction"):
        DatasetSpec(format="ham10000", root=HAM, options={"lesion_fraction": 0})


def test_isic_archive_to_three_classes(tmp_path):
    rec, classes = read("isic", write_isic(tmp_path / "isic"))
    assert classes == ["nevus", "melanoma", "other"]
    # the missing and the indeterminate diagnosis are left out on purpose
    assert len(rec) == 8 and rec["label"].value_counts().to_dict() == {"nevus": 3, "melanoma": 2, "other": 3}
    group = dict(zip(rec["ref"], rec["group"]))
    assert group["ISIC_0000000.jpg"] == group["ISIC_0000001.jpg"] == "IP_1"  # patient first
    assert group["ISIC_0000002.jpg"] == "IL_2"  # then lesion
    assert group["ISIC_0000006.jpg"] == "ISIC_0000006"  # then the image itself
    assert group["ISIC_0000003.jpg"] == group["ISIC_0000009.jpg"]  # one patient, two classes
    assert set(rec["hospital"]) == {"Hospital 0", "Hospital 1"}
    assert decode_all("isic", tmp_path / "isic", rec).shape == (8, 16, 16, 3)


def test_pad_ufes_20(tmp_path):
    rec, classes = read("pad_ufes_20", write_pad(tmp_path / "pad"))
    assert classes == ["nevus", "melanoma", "other"]
    assert rec["label"].tolist() == ["nevus"] * 2 + ["melanoma"] * 2 + ["other"] * 4
    assert rec["group"].tolist() == [f"PAT_{i // 2}" for i in range(8)]
    assert set(rec["sex"]) == {"male", "female"} and rec["ref"].str.startswith("images/imgs_part_").all()
    assert decode_all("pad_ufes_20", tmp_path / "pad", rec).shape == (8, 16, 16, 3)


def test_camelyon17_wilds_hospitals(tmp_path):
    rec, classes = read("camelyon17", write_camelyon(tmp_path / "camelyon17_v1.0"))
    assert classes == ["normal", "tumor"]
    by_center = rec.groupby("hospital")["fixed"].agg(set).to_dict()
    # pool = WILDS train hospitals, hospital 2 = the fixed OOD test set, hospital 1 (OOD val) left out
    assert by_center == {"center0": {""}, "center3": {""}, "center4": {""}, "center2": {"ood:center2"}}
    assert rec["group"].str.fullmatch(r"patient_\d{3}").all() and rec["group"].nunique() == 8
    rec2, _ = read("camelyon17", tmp_path / "camelyon17_v1.0", options={"ood_centers": [1, 2]})
    assert set(rec2["fixed"]) == {"", "ood:center1", "ood:center2"}
    assert decode_all("camelyon17", tmp_path / "camelyon17_v1.0", rec).shape == (len(rec), 16, 16, 3)


@needs_medmnist
@pytest.mark.parametrize("file, counts", [
    ("pneumoniamnist.npz", {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}),
    ("breastmnist.npz", {"train": [147, 399], "val": [21, 57], "test": [42, 114]}),
])
def test_medmnist_official_files(file, counts):
    rec, classes = read("medmnist", MEDMNIST / file)
    assert len(classes) == 2
    for part, expect in counts.items():
        sub = rec[rec["official_split"] == part]
        assert [int((sub["label"] == c).sum()) for c in classes] == expect
    # the official test set is the fixed test set; train + val form the pool
    assert set(rec.loc[rec["official_split"] == "test", "fixed"]) == {"test"}
    assert set(rec.loc[rec["official_split"] != "test", "fixed"]) == {""}
    pooled, _ = read("medmnist", MEDMNIST / file, options={"official_test": False})
    assert set(pooled["fixed"]) == {""}
    img = decode_all("medmnist", MEDMNIST / file, rec.head(5), size=32)
    assert img.shape == (5, 32, 32, 3) and (img[..., 0] == img[..., 2]).all()  # grey -> RGB


@needs_medmnist
def test_medmnist_rgb_file_by_folder_and_metadata():
    rec, classes = read("medmnist", MEDMNIST, metadata="dermamnist_jpeg_reconstruction.npz")
    assert len(rec) == 10015 and classes[4] == "melanoma"
    assert rec.loc[rec["official_split"] == "train", "label"].value_counts()["melanocytic nevi"] == 4693
    img = decode_all("medmnist", MEDMNIST, rec.head(3), size=28, metadata="dermamnist_jpeg_reconstruction.npz")
    assert img.shape == (3, 28, 28, 3)


def test_cifar10_python_batches(tmp_path):
    root = write_cifar(tmp_path / "cifar-10-batches-py")
    rec, classes = read("cifar10", root)
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(classes) == 10
    assert len(rec) == 120 and (rec["fixed"] == "test").sum() == 20
    img = decode_all("cifar10", root, rec.head(2), size=32)
    raw = pickle.loads((root / "data_batch_1").read_bytes())[b"data"][:2]
    np.testing.assert_array_equal(img, raw.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    root = write_cifar(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="data_batch_3.*refusing to load"):
        read("cifar10", root)
    assert not marker.exists()


def test_imagefolder_with_group_pattern(tmp_path):
    root = write_imagefolder(tmp_path / "cxr")
    rec, classes = read("imagefolder", root, options={"group_pattern": r"^(person\d+)_"})
    assert classes == ["normal", "pneumonia"] and len(rec) == 8
    assert sorted(rec["group"].unique()) == ["person0", "person1"]
    rec, _ = read("imagefolder", root)
    assert rec["group"].nunique() == 8  # no pattern: each file its own group
    rec, classes = read("imagefolder", root, class_map={"pneumonia": "disease", "normal": "healthy"})
    assert classes == ["disease", "healthy"]
    assert decode_all("imagefolder", root, rec).shape == (8, 16, 16, 3)


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="bias_strengh"):
        DatasetSpec(format="synthderm", options={"bias_strengh": 0.3})
    with pytest.raises(ValueError, match="overlap"):
        DatasetSpec(format="camelyon17", root="/x", options={"id_centers": [0, 2], "ood_centers": [2]})
    with pytest.raises(ValueError, match="root"):
        DatasetSpec(format="ham10000")
    assert DatasetSpec.parse("ham10000:/data/ham").root == Path("/data/ham")
    assert DatasetSpec.parse("synthderm").opts().n == 2000
