"""The tiny configs of the model tests (hidden 32 or less, 2-3 layers, 4 heads), shared by every test file."""

BERT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    num_labels=2,
)

T5 = dict(
    vocab_size=60,
    d_model=32,
    d_kv=8,
    d_ff=37,
    num_layers=3,
    num_decoder_layers=3,
    num_heads=4,
    dropout_rate=0.0,
    relative_attention_num_buckets=8,
    # T5's default init (factor 1.0) drives this tiny random model's activations to ~200, where fp32 batch-shape noise
    # alone reaches 1e-5 in the logits; half the scale keeps a meaningful 1e-5 test of cached vs recomputed decoding
    initializer_factor=0.5,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)

MARIAN = dict(
    vocab_size=60,
    d_model=32,
    encoder_layers=3,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    max_position_embeddings=64,
    dropout=0.0,
    attention_dropout=0.0,
    scale_embedding=True,  # as opus-mt checkpoints
    # Marian's default init (std 0.02) leaves this tiny model's attention logits at ~0.01, so that EA barely changes
    # the maps; a larger scale gives maps far from uniform, which the tests need to see EA at work
    init_std=0.1,
    # Marian starts decoding with the pad token
    pad_token_id=0,
    decoder_start_token_id=0,
    eos_token_id=1,
    forced_eos_token_id=1,
)

VIT = dict(
    image_size=32,
    patch_size=8,  # a 4 x 4 patch grid: 17 tokens with CLS
    encoder_stride=8,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    num_labels=3,
    # ViT's default init (std 0.02) leaves this tiny model's attention maps near uniform, where EA barely shows
    initializer_range=0.2,
)

DC = dict(
    num_channels=3,
    context_length=12,
    d_model=16,
    num_blocks=3,
    dim_feedforward=24,
    num_attention_heads=2,
    attention_key_fraction=0.25,
    attention_value_fraction=0.25,
    dropout=0.0,
    num_labels=3,
)

LLAMA = dict(
    vocab_size=60,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: the conv's channels are the 4 query heads
    max_position_embeddings=64,
    # Llama's default init (std 0.02) leaves this tiny model's attention maps near uniform, where EA barely shows
    initializer_range=0.2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    num_labels=3,
)
