"""The SAM-family runtime over transformers, shared by the sam2 and sam3 backends.

tracker.py    StreamingVideoTracker: orchestration (step / track / add_prompt / segment)
steps.py      ModelSteps: the model math of one frame (encoder, memory attention, decoder, memory)
memory.py     MemoryPlan: where the tracking memory is bounded (pure, no torch)
adapter.py    LibraryAdapter: the only place touching transformers' private calls
transforms.py pure image / coordinate / mask transforms to and from the model's input frame
loading.py    safe weight loading, device / dtype, resized configs, GPU release
prompting.py  TrackerBackend and the prompt / answer conversions sam2 and sam3 share
options.py    SamOptions, the options both backends take
detector.py   SAM 3's text detector side (tokenizer, text cache, detection)
"""
