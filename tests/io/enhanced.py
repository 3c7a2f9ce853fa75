"""Synthetic Enhanced CT and Enhanced MR objects (PS3.3 A.38.1, A.36.2) for the writer tests.

Built from scratch (no corpus header), as close to conformant as a tiny phantom allows, so that
``dciodvfy`` on a derived copy reports only what the writer introduces. Options add the parts
issue 22 found broken: a supplemental palette (Pixel Presentation COLOR), the MR Pulse Sequence
attributes that are only allowed on ORIGINAL images, and frames stored in descending position.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"

#: MR Pulse Sequence Module (C.8.13.4) attributes of the synthetic Enhanced MR (a 3-D gradient
#: echo: Multiple Spin Echo and Arterial Spin Labeling Contrast do not apply).
MR_PULSE_SEQUENCE = {
    "PulseSequenceName": "GRE3D",
    "MRAcquisitionType": "3D",
    "EchoPulseSequence": "GRADIENT",
    "MultiPlanarExcitation": "NO",
    "PhaseContrast": "NO",
    "TimeOfFlightContrast": "NO",
    "SteadyStatePulseSequence": "NONE",
    "EchoPlanarPulseSequence": "NO",
    "SaturationRecovery": "NO",
    "SpectrallySelectedSuppression": "NONE",
    "OversamplingPhase": "NONE",
    "GeometryOfKSpaceTraversal": "RECTILINEAR",
    "RectilinearPhaseEncodeReordering": "LINEAR",
    "SegmentedKSpaceTraversal": "SINGLE",
    "CoverageOfKSpace": "FULL",
    "NumberOfKSpaceTrajectories": 1,
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def _seq(*items: Dataset) -> Sequence:
    return Sequence(list(items))


def _common(ds: Dataset, sop_class: str, modality: str) -> None:
    """Patient, study, series, frame of reference, equipment and SOP Common modules."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "PHANTOM^SYNTHETIC"
    ds.PatientID = "PHANTOM-1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 3
    ds.SeriesDescription = "synthetic enhanced"
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "medsr tests"
    ds.ManufacturerModelName = "phantom"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1"
    ds.InstanceNumber = 1
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = "20240101120000"
    ds.AcquisitionDuration = 10.0
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = _seq()
    ds.PatientPosition = "HFS"


def _frames(
    ds: Dataset, pixels: np.ndarray, spacing: tuple[float, float, float], descending: bool
) -> None:
    """Pixel data, one In-Stack Position dimension, per-frame Frame Content + Plane Position.

    Slice ``k`` of ``pixels`` lies at z = k · spacing; ``descending`` stores it as frame n-1-k.
    """
    n = pixels.shape[0]
    order = list(range(n))[::-1] if descending else list(range(n))
    dimension_uid = generate_uid()
    ds.DimensionOrganizationSequence = _seq(_item(DimensionOrganizationUID=dimension_uid))
    ds.DimensionIndexSequence = _seq(
        _item(
            DimensionOrganizationUID=dimension_uid,
            DimensionIndexPointer=0x00209057,  # In-Stack Position Number
            FunctionalGroupPointer=0x00209111,  # Frame Content Sequence
            DimensionDescriptionLabel="In-Stack Position",
        )
    )
    per_frame = []
    for k in order:
        content = _item(
            StackID="1",
            InStackPositionNumber=k + 1,
            DimensionIndexValues=[k + 1],
            FrameAcquisitionNumber=1,
            FrameReferenceDateTime="20240101120000",
            FrameAcquisitionDateTime="20240101120000",
            FrameAcquisitionDuration=10.0,
        )
        position = _item(ImagePositionPatient=[-32.0, -32.0, float(k) * spacing[0]])
        per_frame.append(
            _item(
                FrameContentSequence=_seq(content),
                PlanePositionSequence=_seq(position),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = n
    stored = pixels[order]
    ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.min() < 0 else 0
    dtype = "<i2" if ds.PixelRepresentation else "<u2"
    ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    ds["PixelData"].VR = "OW"


def _shared(spacing: tuple[float, float, float], extra: dict[str, object]) -> Dataset:
    sz, sy, sx = spacing
    shared = _item(
        PixelMeasuresSequence=_seq(
            _item(PixelSpacing=[sy, sx], SliceThickness=sz, SpacingBetweenSlices=sz)
        ),
        PlaneOrientationSequence=_seq(_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])),
        FrameAnatomySequence=_seq(
            _item(
                FrameLaterality="U",
                AnatomicRegionSequence=_seq(_code("69536005", "SCT", "Head")),
            )
        ),
        FrameVOILUTSequence=_seq(_item(WindowCenter=40, WindowWidth=400)),
    )
    for key, value in extra.items():
        setattr(shared, key, value)
    return shared


def _phantom(shape: tuple[int, int, int], lo: float, hi: float) -> np.ndarray:
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    r = np.hypot(y - shape[1] / 2, x - shape[2] / 2)
    values = np.where(r < shape[1] / 3, hi, lo) + 5 * z
    return values.astype(np.int16)


def _palette(ds: Dataset) -> None:
    """Supplemental Palette Color LUT (C.7.6.19): a 256-entry 8-bit ramp over stored 0..255."""
    ramp = np.arange(256, dtype="<u2")
    ds.PixelPresentation = "COLOR"
    for colour, data in (("Red", ramp), ("Green", ramp[::-1]), ("Blue", (ramp * 7) % 256)):
        ds[f"{colour}PaletteColorLookupTableDescriptor"] = pydicom.DataElement(
            f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16]
        )
        setattr(ds, f"{colour}PaletteColorLookupTableData", (data * 257).astype("<u2").tobytes())
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"


def _synchronization(ds: Dataset) -> None:
    """Cardiac (C.7.6.18.1) and Respiratory (C.7.6.18.2) Synchronization, module and per frame."""
    ds.CardiacSynchronizationTechnique = "PROSPECTIVE"
    ds.CardiacSignalSource = "ECG"
    ds.CardiacRRIntervalSpecified = 800
    ds.CardiacBeatRejectionTechnique = "RR_INTERVAL"
    ds.LowRRValue = 700
    ds.HighRRValue = 900
    ds.IntervalsAcquired = 10
    ds.IntervalsRejected = 0
    ds.SkipBeats = 0
    ds.CardiacFramingType = "TRIGGERED"
    ds.RespiratoryMotionCompensationTechnique = "GATING"
    ds.RespiratorySignalSource = "BELT"
    ds.RespiratoryTriggerDelayThreshold = 10
    ds.RespiratoryTriggerType = "TIME"
    cardiac = _item(
        NominalPercentageOfCardiacPhase=10,
        NominalCardiacTriggerDelayTime=100,
        ActualCardiacTriggerDelayTime=100,
        IntervalsAcquired=10,
        IntervalsRejected=0,
        HeartRate=75,
        LowRRValue=700,
        HighRRValue=900,
        RRIntervalTimeNominal=800,
    )
    respiratory = _item(
        RespiratoryIntervalTime=4000,
        NominalPercentageOfRespiratoryPhase=10,
        NominalRespiratoryTriggerDelayTime=100,
        ActualRespiratoryTriggerDelayTime=100,
    )
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.CardiacSynchronizationSequence = _seq(copy.deepcopy(cardiac))
        item.RespiratorySynchronizationSequence = _seq(copy.deepcopy(respiratory))


def enhanced_ct(
    *,
    palette: bool = False,
    descending: bool = False,
    synchronization: bool = False,
    frames: int = 4,
    pixels: np.ndarray | None = None,
) -> Dataset:
    """An Enhanced CT Image (A.38.1) of a small HU phantom, ORIGINAL, ``frames`` axial frames.

    ``pixels`` ((Z, Y, X) integers) replace the phantom (``frames`` is then their count);
    ``palette`` adds a Supplemental Palette Color LUT (Pixel Presentation COLOR),
    ``synchronization`` the cardiac and respiratory modules, ``descending`` stores the frames
    from the highest position down.
    """
    ds = Dataset()
    _common(ds, ENHANCED_CT, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    spacing = (2.5, 0.75, 0.75)
    pixels = _phantom((frames, 16, 16), -1000.0, 40.0) if pixels is None else pixels
    frame_type = _item(
        FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"],
        PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE",
    )
    extra = {
        "CTImageFrameTypeSequence": _seq(frame_type),
        "PixelValueTransformationSequence": _seq(
            _item(RescaleIntercept=0, RescaleSlope=1, RescaleType="HU")
        ),
        "IrradiationEventIdentificationSequence": _seq(_item(IrradiationEventUID=generate_uid())),
        "CTAcquisitionTypeSequence": _seq(
            _item(AcquisitionType="SEQUENCED", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")
        ),
        "CTAcquisitionDetailsSequence": _seq(
            _item(
                DataCollectionDiameter=500,
                GantryDetectorTilt=0,
                TableHeight=150,
                RotationDirection="CW",
                RevolutionTime=1,
                SingleCollimationWidth=1.25,
                TotalCollimationWidth=20,
            )
        ),
        "CTTableDynamicsSequence": _seq(
            _item(TableSpeed=0, TableFeedPerRotation=0, SpiralPitchFactor=0)
        ),
        "CTGeometrySequence": _seq(
            _item(DistanceSourceToDetector=1000, DistanceSourceToDataCollectionCenter=500)
        ),
        "CTReconstructionSequence": _seq(
            _item(
                ReconstructionAlgorithm="FILTER_BACK_PROJ",
                ConvolutionKernel="STANDARD",
                ConvolutionKernelGroup="SOFT_TISSUE",
                ImageFilter="NONE",
                ReconstructionDiameter=12,
                ReconstructionPixelSpacing=[0.75, 0.75],
                ReconstructionAngle=360,
            )
        ),
        "CTExposureSequence": _seq(
            _item(
                ExposureTimeInms=1000,
                XRayTubeCurrentInmA=200,
                ExposureInmAs=200,
                ExposureModulationType="NONE",
                CTDIvol=20,
            )
        ),
        "CTXRayDetailsSequence": _seq(
            _item(KVP=120, FocalSpots=[1.0], FilterType="FLAT", FilterMaterial=["ALUMINUM"])
        ),
    }
    ds.SharedFunctionalGroupsSequence = _seq(_shared(spacing, extra))
    _frames(ds, pixels, spacing, descending)
    for item in ds.PerFrameFunctionalGroupsSequence:
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        item.CTPositionSequence = _seq(
            _item(
                TablePosition=z,
                ReconstructionTargetCenterPatient=[0.0, 0.0, z],
                DataCollectionCenterPatient=[0.0, 0.0, z],
            )
        )
    if palette:
        _palette(ds)
        frame_type.PixelPresentation = "COLOR"
    if synchronization:
        _synchronization(ds)
    return _with_file_meta(ds)


def enhanced_mr(
    *,
    pulse_sequence: bool = True,
    descending: bool = False,
    synchronization: bool = False,
    frames: int = 4,
    pixels: np.ndarray | None = None,
) -> Dataset:
    """An Enhanced MR Image (A.36.2) of a small phantom, ORIGINAL.

    ``pixels`` ((Z, Y, X) integers, e.g. :func:`emri_pixels`) replace the phantom;
    ``pulse_sequence`` adds the MR Pulse Sequence Module and a Bulk Motion Compensation
    Technique (allowed on ORIGINAL images only); ``synchronization``, ``descending`` as for
    :func:`enhanced_ct`.
    """
    ds = Dataset()
    _common(ds, ENHANCED_MR, "MR")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "T1"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = 1.5
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImageComments = ""
    if pulse_sequence:
        for key, value in MR_PULSE_SEQUENCE.items():
            setattr(ds, key, value)
        ds.BulkMotionCompensationTechnique = "NONE"
    spacing = (2.0, 1.0, 1.0)
    pixels = _phantom((frames, 16, 16), 20.0, 800.0) if pixels is None else pixels
    frames, rows, cols = pixels.shape
    frame_type = _item(
        FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
        PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE",
        ComplexImageComponent="MAGNITUDE",
        AcquisitionContrast="T1",
    )
    extra = {
        "MRImageFrameTypeSequence": _seq(frame_type),
        "PixelValueTransformationSequence": _seq(
            _item(RescaleIntercept=0, RescaleSlope=1, RescaleType="US")
        ),
        "MRTimingAndRelatedParametersSequence": _seq(
            _item(
                RepetitionTime=20,
                FlipAngle=15,
                EchoTrainLength=1,
                RFEchoTrainLength=0,
                GradientEchoTrainLength=1,
                GradientOutputType="DB_DT",
                GradientOutput=10,
                SpecificAbsorptionRateSequence=_seq(
                    _item(
                        SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                        SpecificAbsorptionRateValue=0.5,
                    )
                ),
                OperatingModeSequence=_seq(
                    _item(OperatingModeType="STATIC FIELD", OperatingMode="IEC_NORMAL")
                ),
            )
        ),
        "MRFOVGeometrySequence": _seq(
            _item(
                InPlanePhaseEncodingDirection="ROW",
                MRAcquisitionFrequencyEncodingSteps=cols,
                MRAcquisitionPhaseEncodingStepsInPlane=rows,
                MRAcquisitionPhaseEncodingStepsOutOfPlane=frames,
                PercentSampling=100,
                PercentPhaseFieldOfView=100,
            )
        ),
        "MREchoSequence": _seq(_item(EffectiveEchoTime=5)),
        "MRModifierSequence": _seq(
            _item(
                InversionRecovery="NO",
                FlowCompensation="NONE",
                Spoiling="RF",
                T2Preparation="NO",
                SpectrallySelectedExcitation="NONE",
                SpatialPresaturation="NONE",
                PartialFourier="NO",
                ParallelAcquisition="NO",
            )
        ),
        "MRImagingModifierSequence": _seq(
            _item(
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
                TransmitterFrequency=63.9,
                PixelBandwidth=200,
            )
        ),
        "MRReceiveCoilSequence": _seq(
            _item(
                ReceiveCoilName="HEAD",
                ReceiveCoilManufacturerName="medsr tests",
                ReceiveCoilType="VOLUME",
                QuadratureReceiveCoil="YES",
            )
        ),
        "MRTransmitCoilSequence": _seq(
            _item(
                TransmitCoilName="BODY",
                TransmitCoilManufacturerName="medsr tests",
                TransmitCoilType="BODY",
            )
        ),
        "MRAveragesSequence": _seq(_item(NumberOfAverages=1)),
    }
    ds.SharedFunctionalGroupsSequence = _seq(_shared(spacing, extra))
    _frames(ds, pixels, spacing, descending)
    if synchronization:
        _synchronization(ds)
    return _with_file_meta(ds)


def emri_pixels() -> np.ndarray:
    """The 10 frames of 64² of pydicom's ``emri_small.dcm`` (a real head MR, 12-bit): real
    pixels for :func:`enhanced_mr`, whose own header (an Enhanced MR without functional groups)
    is not well formed."""
    from tests.io.conftest import dicom_corpus_path

    return pydicom.dcmread(dicom_corpus_path("emri_small.dcm")).pixel_array.astype(np.int16)


def _with_file_meta(ds: Dataset) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def save(ds: Dataset, path: Path) -> Path:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path
