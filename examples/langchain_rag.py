"""A LangChain RAG chain over a ragtune index, fully offline.

    ragtune index build docs/ --out my-index
    python examples/langchain_rag.py --index my-index --model runs/my-llm/final --question "What lowers blood pressure?"

The retriever (hybrid BM25 + dense, optional cross-encoder rerank) comes from ragtune; prompt, model and output
parsing are plain LangChain: `RagtuneRetriever` drops into any chain that takes a BaseRetriever.
"""

from __future__ import annotations

import argparse

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_huggingface import HuggingFacePipeline
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from ragtune.integrations.langchain import RagtuneRetriever

PROMPT = ChatPromptTemplate.from_template(
    "Answer from the context and cite the sources.\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:")


def format_docs(docs) -> str:
    return "\n\n".join(f"[{i}] ({d.metadata['source']}) {d.page_content}" for i, d in enumerate(docs, start=1))


def build_chain(index: str, model: str, reranker: str | None = None, k: int = 3, max_new_tokens: int = 64):
    retriever = RagtuneRetriever.from_index(index, reranker=reranker, k=k)
    tokenizer = AutoTokenizer.from_pretrained(model)
    generate = pipeline("text-generation", model=AutoModelForCausalLM.from_pretrained(model), tokenizer=tokenizer,
                        max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
    llm = HuggingFacePipeline(pipeline=generate)
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | llm | StrOutputParser()
    return chain, retriever


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", required=True)
    parser.add_argument("--model", required=True, help="a local causal LM folder (e.g. a merged ragtune model)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--reranker", default=None)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    chain, retriever = build_chain(args.index, args.model, args.reranker, args.k)
    print("answer:", chain.invoke(args.question).strip())
    for doc in retriever.invoke(args.question):
        print(f"source: {doc.metadata['source']} (chunk {doc.metadata['chunk_id']})")


if __name__ == "__main__":
    main()
