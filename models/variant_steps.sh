# shellcheck shell=bash
# Sourced by models/real_variants.sh and models/real_round2.sh: the `--set` overrides of the real-model variants
# and the steps every variant goes through, each on the shipped recipe's config ($CFG) with the variant's own
# options. The caller sets S (the shapemask command), CFG, R (its imported data), MODELS (the folder of the
# variants' model dirs), registers its variants with `variant`, and defines `overrides NAME`, which prints variant
# NAME's options: its `--set ${SETS[NAME]}` and where its model goes.

declare -A SETS=()  # variant name -> its overrides, "key=value ..."

# variant NAME OVERRIDES: register variant NAME, trained with OVERRIDES ("key=value ...") on top of $CFG
variant() {
  SETS[$1]=$2
}

# trained_on TFRECORDS_DIR PRIORS: the overrides that train on other data (its TFRecords and shape priors)
trained_on() {
  echo "data.train_pattern=$1/train-*.tfrecord model.mask.priors_path=$2"
}

# variant_train NAME [OPTION...]: train variant NAME (a rerun resumes from its last checkpoint)
variant_train() {
  local name=$1
  shift
  # shellcheck disable=SC2046  # the overrides are separate words
  $S train --config $CFG $(overrides "$name") "$@"
}

# variant_select NAME SELECTION_JSON: every checkpoint the variant kept (ckpt-200 .. ckpt-1000 for the 1,000-step
# recipe) scored with GT boxes on a held-out selection set (MODELS/NAME/select_<step>.json), the data that
# chooses the checkpoint and the variant
variant_select() {
  local name=$1 sel=$2 md=$MODELS/$1 n
  for n in $(ls $md/checkpoints | sed -n 's/^ckpt-\([0-9]*\)\.index$/\1/p' | sort -n); do
    # shellcheck disable=SC2046  # the overrides are separate words
    $S eval --config $CFG $(overrides "$name") --checkpoint $md/checkpoints/ckpt-$n \
      --annotations $sel --images $R --box-source gt --metrics $md/select_$n.json
  done
}

# variant_export NAME STEP ANNOTATIONS OUT [OPTION...]: an ONNX bundle (fp16 weights, no SavedModel) of
# checkpoint STEP, class names from ANNOTATIONS
variant_export() {
  local name=$1 step=$2 ann=$3 out=$4
  shift 4
  # shellcheck disable=SC2046  # the overrides are separate words
  $S export --config $CFG $(overrides "$name") --checkpoint $MODELS/$name/checkpoints/ckpt-$step \
    --annotations $ann --out $out --no-saved-model "$@" --onnx-weights fp16
}
