"""The one schema every recipe config starts from.

Recipe files in `configs/` call `base_config()` and change values; they never
add fields, so a typo in `--config.FIELD=VALUE` is caught (the dict is locked)
and every run's config has the same shape. Each field says what it does here.
"""

import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """Returns the default config, locked against new fields."""
    c = ml_collections.ConfigDict()

    c.seed = 0  # Seeds init, dropout and data order; a resumed run reuses it.
    c.total_steps = 1000  # Optimizer steps of the whole run.
    c.batch_size = 32  # Global batch (all hosts); every example sees all others as negatives.
    c.log_every = 10  # Console and TensorBoard metrics every N steps.
    c.eval_every = 0  # Evaluate every N steps (0 = only before and after training).
    c.checkpoint_every = 0  # Save every N steps (0 = off); the last step is always saved.
    c.keep_checkpoints = 3  # How many recent checkpoints to keep on disk.
    c.async_checkpointing = True  # Write checkpoints in the background while training goes on.
    # Mesh axis name -> size; -1 takes the devices left over. Batch is split
    # over (data, fsdp); parameters are sharded over fsdp and tensor.
    c.mesh_shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = "fsdp_tp"  # Logical-axis rules preset: fsdp | fsdp_tp | dp (training.sharding).

    c.model = ml_collections.ConfigDict()
    c.model.name = "bert"  # Backbone family (models.registry).
    # Pretrained weights: '' (random), 'minilm', 'st:PATH', 'gguf:PATH', 'hf:PATH', 'gemma3-270m', a workdir.
    c.model.init = ""
    c.model.vocab = "minilm"  # Vocabulary spec (data.vocabularies.get_vocabulary).
    c.model.vocab_size = 30522  # Rows of the token embedding.
    c.model.hidden_size = 384  # Width of the residual stream.
    c.model.num_layers = 6  # Transformer layers.
    c.model.num_heads = 12  # Attention heads.
    c.model.intermediate_size = 1536  # MLP hidden width.
    c.model.max_position_embeddings = 512  # Longest sequence the position table covers.
    c.model.type_vocab_size = 2  # BERT segment ids (always 0 here, kept for weight import).
    c.model.layer_norm_eps = 1e-12  # LayerNorm epsilon.
    c.model.dropout_rate = 0.1  # Dropout on hidden states during training.
    c.model.attention_dropout_rate = 0.1  # Dropout on attention weights during training.
    c.model.pooling = "mean"  # Pooling of token states: mean | cls | last.
    c.model.projection_dim = 0  # Dense head after pooling (0 = none).
    c.model.multi_vector_dim = 0  # Per-token output vectors of this width, for XTR (0 = pooled).
    # AligneR (models.salience): query and document salience heads on a multi-vector tower,
    # gated to keep ceil(fraction * tokens) of each text by an entropy-regularised LP.
    c.model.salience_heads = False
    c.model.salience_query_fraction = 0.5  # alpha^q: fraction of query tokens the gate keeps.
    c.model.salience_doc_fraction = 0.4  # alpha^d: the same for documents.
    c.model.salience_epsilon = 0.002  # Entropy weight of the gate (smaller = closer to hard top-k).
    c.model.salience_iterations = 100  # Unrolled iterations of the gate's solver.
    c.model.normalize = True  # L2-normalise the embedding.
    c.model.dtype = "float32"  # Compute dtype (float32 | bfloat16); parameters stay float32.
    c.model.attention_impl = (
        "xla"  # Attention: xla | splash (TPU kernel) | cudnn (NVIDIA GPU kernel); models.attention.
    )
    # Gemma backbones (model.name = 'gemma'; layer_norm_eps is the RMSNorm epsilon).
    c.model.gemma_version = 3  # Gemma generation 1 | 2 | 3 (norm layout, QK-norm, local/global pattern).
    c.model.num_kv_heads = 1  # Key/value heads (1 = multi-query; num_heads = multi-head).
    c.model.head_dim = 256  # Width of each attention head.
    c.model.query_pre_attn_scalar = 0.0  # Queries are scaled by its inverse sqrt (0 = head_dim).
    c.model.sliding_window = 512  # Span of local-attention layers in tokens (0 = all layers global).
    c.model.sliding_window_pattern = 6  # Every N-th layer is global, the rest local (Gemma 2: 2, Gemma 3: 6).
    c.model.rope_global_base = 1_000_000.0  # RoPE base of global layers (Gemma 1/2: 10k).
    c.model.rope_local_base = 10_000.0  # RoPE base of local layers.
    c.model.rope_scaling_factor = 1.0  # Linear RoPE position scaling of global layers (1 = none).
    c.model.attn_logit_softcap = 0.0  # tanh soft-cap of attention scores (Gemma 2: 50; 0 = off).
    c.model.final_logit_softcap = 0.0  # tanh soft-cap of LM logits (Gemma 2: 30; 0 = off).
    c.model.attention = "bidirectional"  # Gemma attention mode: bidirectional (towers) | causal.
    c.model.remat = False  # Recompute each layer in the backward pass (less memory; BERT: scanned only).
    c.model.remat_policy = "full"  # Scanned layers: what remat keeps, full (nothing) | dots (matmul outputs).
    c.model.scan_layers = (
        False  # Run the layers as one loop over stacked weights: fast compiles of deep towers.
    )

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""  # Folder with the bundled real data (squad/, snli/, stsb/ ...).
    c.data.train_files = ""  # Comma-separated JSONL/TFRecord paths; when set, replaces the mixture.
    c.data.mixture = ("tiny",)  # Sources, 'NAME' or 'NAME:RATE' (data.mixtures); no rates = by size.
    c.data.one_source_batches = False  # Each global batch from one source, drawn by rate (Gemini Embedding).
    c.data.tfds_dir = ""  # Where TFDS keeps prepared datasets ('' = ~/tensorflow_datasets).
    c.data.download = False  # Fetch datasets missing from data_dir from their official URLs.
    c.data.fret_files = ""  # FRet output (JSONL/TFRecord, comma-separated) for the 'fret' source.
    # Where sources are prepared on first use (data.prepared_cache); '' = $GECKO_JAX_DATA_CACHE or
    # ~/.cache/gecko_jax/prepared.
    c.data.cache_dir = ""
    c.data.squad_hard_negatives = True  # Give each SQuAD question another paragraph of its article.
    c.data.max_length = 128  # Tokens per text, special tokens included.
    c.data.query_max_length = 0  # Tokens per query (0 = max_length); short queries save compute.
    # Pad each batch only to the bucket of its longest text (data.packing.length_buckets) instead
    # of max_length: short texts cost less, but the step compiles once per length pair it meets.
    c.data.bucket_lengths = False
    c.data.format = "gecko"  # Input format: gecko (task/title prompts) | plain.
    # Jasper teachers: teacher-store folders or Encoder specs (encoded into
    # WORKDIR/teachers once); each batch gets their vectors as batch['teacher'].
    c.data.teachers = ()

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "gecko"  # Loss function (losses.registry).
    c.loss.temperature = 0.05  # Softmax temperature of the contrastive loss.
    c.loss.same_tower = True  # Add query-query in-batch negatives (Gecko).
    c.loss.mrl_dims = ()  # Matryoshka prefix sizes; () = the full embedding only.
    c.loss.mrl_weights = ()  # One weight per prefix; () = all 1 (jasper_distill: the mean).
    c.loss.spread_out_weight = 0.0  # EmbeddingGemma's spread-out term (gecko, gemini_nce; 0 = off).
    c.loss.jasper_weights = (10.0, 200.0, 20.0)  # Jasper: cosine, similarity-MSE, hinge weights.
    c.loss.jasper_margin = 0.015  # Margin of Jasper's relative-similarity hinge.
    c.loss.jasper_chunk_size = 1024  # Pair rows per chunk of that hinge; smaller saves memory.
    # Widths of the teachers in batch['teacher']; () = one (or data.teachers).
    c.loss.jasper_teacher_dims = ()
    c.loss.xtr_k_train = 128  # Batch tokens each XTR query token retrieves (paper: 32 to 320).
    c.loss.aligner_alignment = "top1"  # AligneR's training alignment: top1 | topk:K | topp:P (P in %).

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # Optimizer (training.optimizers).
    c.optimizer.learning_rate = 1e-4  # Peak learning rate.
    c.optimizer.warmup_steps = 100  # Linear warmup from 0 to the peak.
    c.optimizer.decay = "cosine"  # After warmup: cosine | linear | constant.
    c.optimizer.end_lr_fraction = 0.0  # Final learning rate as a fraction of the peak.
    c.optimizer.weight_decay = 0.01  # Decoupled weight decay (not on biases or norms).
    c.optimizer.b1 = 0.9  # Adam beta1.
    c.optimizer.b2 = 0.999  # Adam beta2.
    c.optimizer.eps = 1e-6  # Adam epsilon.
    c.optimizer.grad_clip_norm = 1.0  # Clip the global gradient norm (0 = off).
    c.optimizer.grad_accum_steps = 1  # Average gradients over N steps before one update.
    c.optimizer.trainable = ()  # Regexes over parameter paths; only matches train (() = all).
    c.optimizer.frozen = ()  # Regexes of parameters that never train.
    c.optimizer.lr_multipliers = ()  # 'REGEX=FACTOR' entries scaling the learning rate (first match).

    c.grad_cache = ml_collections.ConfigDict()
    c.grad_cache.chunk_size = 0  # Examples per GradCache chunk (0 = off, plain step).

    # Evaluators by name, each built with `evaluator(...)` below (training.evaluators).
    c.evals = ml_collections.ConfigDict()
    c.eval_batch_size = 64  # Texts per encoder batch of those evaluators.
    c.best_metric = ""  # Keep WORKDIR/best by this result, e.g. 'evals.stsb.spearman' ('' = off).
    c.best_mode = "max"  # Whether a higher (max) or lower (min) best_metric is better.

    # The prompts launch/export.py writes into an exported model, by sentence-transformers
    # name ('' = those of data.format: Gecko's, or none for plain).
    c.export = ml_collections.ConfigDict()
    c.export.query_prompt = ""  # The 'query' prompt.
    c.export.sts_prompt = ""  # The 'STS' prompt.

    c.lock()
    c.evals.unlock()  # Recipes add their evaluators by name.
    return c


def evaluator(
    task: str,
    data: str,
    every: int = 0,
    dims: tuple[int, ...] = (),
    split: str = "",
    prompt: str = "",
    doc_prompt: str = "",
    doc_format: str = "",
) -> ml_collections.ConfigDict:
    """One entry of `config.evals`: a task of `gecko_jax.evaluation.tasks` on some data.

    Training turns it into an `evaluation.eval_spec.EvalSpec` named by its key
    in `config.evals`, which scores the full embedding and `dims`.

    Args:
      task: sts | retrieval | classification | clustering.
      data: its file or folder, relative to `data.data_dir`.
      every: run every N steps (0 = every `eval_every` steps); always before and after training.
      dims: Matryoshka dims to evaluate besides the full one.
      split: the split of an STS or BEIR folder ('' = test).
      prompt: prompt of queries and symmetric texts ('' = the model's own for `data.format`).
      doc_prompt: prompt of retrieval documents ('' = the model's own).
      doc_format: template over {title} and {text} for documents ('' = the model's own).

    Returns:
      A locked ConfigDict with those fields.
    """
    entry = ml_collections.ConfigDict(
        dict(
            task=task,
            data=data,
            every=every,
            dims=tuple(dims),
            split=split,
            prompt=prompt,
            doc_prompt=doc_prompt,
            doc_format=doc_format,
        )
    )
    entry.lock()
    return entry


def bundled_data_dir(recipe_file: str) -> str:
    """The bundled data folder, ../shared/data beside the repo of `recipe_file`; '' if absent.

    Recipes pass their own `__file__`, so the folder is found from where the
    recipe lives whatever the working directory.
    """
    folder = os.path.join(os.path.dirname(os.path.abspath(recipe_file)), "..", "..", "shared", "data")
    return os.path.normpath(folder) if os.path.isdir(folder) else ""
